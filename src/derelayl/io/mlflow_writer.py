"""The MLflow writer process: a run's tracking, done beside the run instead of in it.

``derelayl.io.mlflow.WriterProcess`` starts ``python -m derelayl.io.mlflow_writer`` as soon as a
run's config is checked and talks to it in JSON lines on its stdin/stdout. The writer imports
MLflow and opens the store while the run imports PyTorch and loads its data, and it writes the
metrics while the run computes: on two cores, a run's tracking costs it almost nothing.

Requests (one JSON object a line; replies likewise):

- ``open``: import MLflow; an existing store is opened (its schema checked), a server is probed
  and the credentials checked; nothing is created. Reply ``{"ok": "open"}`` or ``{"error"}``.
- ``start``: create the store if needed, the experiment, the run (name, tags, parent); log the
  params; close the stale runs of the folder. Reply ``{"run_id": ...}``.
- ``log``: metrics ``[[key, value, timestamp_ms, step], ...]`` and tags (batched writes).
- ``artifacts``: files (or folders) to copy into the run.
- ``end``: close the run with a status; reply ``{"ok": "end"}`` and exit.

End of input without ``end`` (the run's process died, SIGKILL included) closes the run as
KILLED with every metric received so far. Any failure is reported as ``{"error": "<one line>"}``
and the writer exits: the run decides what that means.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from typing import Any

MAX_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch


_REPLIES = sys.stdout  # the protocol's channel; main() sends everything else to stderr


def _reply(obj: dict[str, Any]) -> None:
    """Answer the run; a run that is gone (killed before it read the answer) is not an error:
    the writer goes on writing what it was handed and closes the record KILLED at the end."""
    with contextlib.suppress(BrokenPipeError, OSError, ValueError):
        _REPLIES.write(json.dumps(obj) + "\n")
        _REPLIES.flush()


def _own_stdout() -> None:
    """Keep the reply channel for replies: what MLflow prints ("View run ... at: ...") and any
    library's output go to stderr instead."""
    global _REPLIES
    import os

    _REPLIES = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr


class Writer:
    def __init__(self):
        self.client = None
        self.run_id: str | None = None
        self.uri: str | None = None

    def open(self, req: dict) -> dict:
        from derelayl.io.mlflow_store import open_client, sqlite_path

        self.uri = req["uri"]
        path = sqlite_path(self.uri)
        if path is None or path.is_file():  # never create a store before the run is accepted
            self.client = open_client(self.uri, create=False)
        else:
            import mlflow.tracking  # noqa: F401  (the import is what takes the time)
        return {"ok": "open"}

    def start(self, req: dict) -> dict:
        from derelayl.io.mlflow import get_or_create_experiment
        from derelayl.io.mlflow_store import close_stale_runs, open_client

        if self.client is None:
            assert self.uri is not None  # "open" is the first request
            self.client = open_client(self.uri)
        exp = get_or_create_experiment(self.client, req["experiment"], req.get("artifact_location"))
        run = self.client.create_run(exp, run_name=req.get("run_name"), tags=req.get("tags") or {})
        self.run_id = run.info.run_id
        close_stale_runs(req.get("stale") or [], self)
        return {"run_id": self.run_id}

    def params(self, req: dict) -> None:
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in (req.get("params") or {}).items()]
        assert self.client is not None  # "start" came first
        for start in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    @property
    def tracking_uri(self) -> str | None:  # what close_stale_runs asks of a tracker
        return self.uri

    def log(self, req: dict) -> None:
        from mlflow.entities import Metric, RunTag

        metrics = [
            Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in req.get("metrics") or []
        ]
        tags = [RunTag(k, str(v)) for k, v in (req.get("tags") or {}).items()]
        assert self.client is not None  # "start" came first
        while metrics or tags:
            chunk, metrics = metrics[:MAX_BATCH], metrics[MAX_BATCH:]
            self.client.log_batch(self.run_id, metrics=chunk, tags=tags)
            tags = []

    def artifacts(self, req: dict) -> None:
        from pathlib import Path

        assert self.client is not None  # "start" came first
        for path in map(Path, req.get("paths") or []):
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), req.get("artifact_path"))
            elif path.exists():
                self.client.log_artifact(self.run_id, str(path), req.get("artifact_path"))

    def end(self, status: str) -> None:
        if self.client is not None and self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)


def _quit() -> None:
    """Leave now that the run is closed: every write has returned (the store committed it),
    so skip the interpreter's teardown of MLflow and SQLAlchemy (~0.7 s the run would wait)."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def main() -> None:
    _own_stdout()
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    writer = Writer()
    try:
        import mlflow.tracking  # noqa: F401  (started before the run's request: the import is slow)

        for line in sys.stdin:
            if not line.endswith("\n"):  # the run died while handing over a request: its
                break  # earlier requests are all there is (closed KILLED below)
            req = json.loads(line)
            op = req["op"]
            if op == "open":
                _reply(writer.open(req))
            elif op == "start":
                _reply(writer.start(req))
            elif op == "params":
                writer.params(req)
            elif op == "log":
                writer.log(req)
            elif op == "artifacts":
                writer.artifacts(req)
            elif op == "end":
                writer.end(req["status"])
                _reply({"ok": "end"})
                _quit()
        writer.end("KILLED")  # the run's process is gone: close its record
    except Exception as err:  # one line to the run; the run decides what it means
        with contextlib.suppress(Exception):
            writer.end("FAILED")
        _reply({"error": _first_line(err)})


if __name__ == "__main__":
    main()
