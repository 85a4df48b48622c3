"""MLflow tracking through ``MlflowClient`` (no global active-run state).

Metrics are buffered and written with ``log_batch`` so a run of thousands of steps costs a few
database transactions, not one per value. The buffer is flushed at the end of every settled
round (relay: every round of hops), at most once every ``flush_every_s`` seconds (one database
write costs ~10 ms: a 5,000-round random-walk run would otherwise spend a minute writing), so a
killed run's MLflow record holds its metrics up to a round or a second before the kill. Writes
hold SIGTERM/SIGINT until they are done (``io.signals.critical``).

A long run's curves are thinned to at most ``max_points`` points per metric (``tracking.
max_points``, default 1000: every ``ceil(steps / max_points)``-th hop or round, and always the
first and the last): MLflow writes ~10,000 values a second, so 5,000 rounds of 50 metrics would
take half a minute, and a chart shows no more than that anyway. Every value of every step stays in
the run folder (``history.csv``, ``rounds.jsonl``, artifacts of the run).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from derelayl.io.signals import critical
from derelayl.sim.events import HopRecord, Observer, RoundRecord

for _name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
    logging.getLogger(_name).setLevel(logging.WARNING)

MAX_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch
HOP_KEYS = (
    "val_acc",
    "val_loss",
    "test_acc",
    "test_loss",
    "train_loss",
    "participant",
    "samples_seen",
    "round",
    "bytes",
    "sim_time_s",
)
# Also logged with step = samples seen, so runs of any algorithm overlay at equal work.
BY_SAMPLES_KEYS = ("val_acc", "test_acc")


# MLflow 3's UI opens an experiment without this tag in its GenAI (traces) view
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def get_or_create_experiment(client, name: str, artifact_location: str | None) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(
            name, artifact_location=artifact_location, tags=EXPERIMENT_TAGS
        )
    except MlflowException:  # created concurrently by another job
        return client.get_experiment_by_name(name).experiment_id


_spare: WriterProcess | None = None


def start_spare_writer() -> None:
    """Start a writer process before the run's config is known (``derelayl-train`` does, first
    thing): MLflow's import (~1.3 s) then runs while Hydra composes the config and PyTorch
    loads. :func:`open_writer` takes it; :func:`discard_spare_writer` ends an unused one."""
    global _spare
    discard_spare_writer()
    _spare = WriterProcess()


def discard_spare_writer() -> None:
    """End the spare writer if no run took it (a run that does not track, a refused one)."""
    global _spare
    spare, _spare = _spare, None
    if spare is not None:
        spare.kill()


def open_writer(uri: str) -> WriterProcess:
    """The MLflow writer process for ``uri`` (the spare one if it was started), once a check
    that creates nothing has passed (``mlflow_store.preflight``: a one-line StoreError for a
    store no run can use)."""
    global _spare
    from derelayl.io.mlflow_store import preflight

    preflight(uri)
    writer, _spare = _spare, None
    if writer is None or writer.proc.poll() is not None:
        writer = WriterProcess()
    writer.open(uri)
    return writer


class WriterProcess:
    """The MLflow writer process (``derelayl.io.mlflow_writer``) and the pipe to it.

    Started as soon as a run's values are checked (:meth:`open`): it imports MLflow and opens
    the store while the run imports PyTorch and loads its data. Requests go out through a sender
    thread, so the run never waits on the pipe while the writer is busy (importing MLflow,
    creating the database); a reply line is read by another thread; an ``{"error"}`` reply (or
    the process's end) raises a one-line ``StoreError`` at the run's next call.
    """

    def __init__(self, uri: str | None = None):
        import subprocess
        import sys

        self.uri = uri or ""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "derelayl.io.mlflow_writer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None  # PIPE: both open
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        self.replies: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._outbox: queue.Queue[str | None] = queue.Queue()
        self._sender = threading.Thread(target=self._write, daemon=True)
        self._sender.start()
        self.error: str | None = None
        self.early: list[dict] = []
        self.opened = False
        if uri is not None:
            self.open(uri)

    def open(self, uri: str) -> None:
        """Ask the writer to open the store at ``uri`` (:meth:`ready` waits for its answer)."""
        self.uri = uri
        self.send({"op": "open", "uri": uri})

    def kill(self) -> None:
        """End a writer that was given no run (it has written nothing)."""
        with contextlib.suppress(OSError):
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.drain(timeout=1)

    @property
    def store_can_refuse(self) -> bool:
        """Whether opening the store may refuse the run: a server or an existing database
        answers first; a database this run will create has nothing to check yet (so the run
        need not wait for MLflow's import)."""
        from derelayl.io.mlflow_store import sqlite_path

        path = sqlite_path(self.uri)
        return path is None or path.is_file()

    def ready(self) -> None:
        """Return once the store is open (or raise the one-line reason it cannot be)."""
        if not self.opened:
            self.wait_for("ok")
            self.opened = True

    def answered(self) -> int:
        """How many replies have come and wait for their ``wait_for`` (without blocking)."""
        self.check()
        return len(self.early)

    def _read(self) -> None:
        try:
            for line in self.stdout:
                try:
                    reply = json.loads(line)
                except ValueError:  # not a reply: pass it on rather than lose the channel
                    sys.stderr.write(line)
                    continue
                self.replies.put(reply if isinstance(reply, dict) else {"error": str(reply)})
        finally:
            self.replies.put({"error": "the MLflow writer process ended"})

    def _write(self) -> None:
        """The sender thread: request lines to the writer, in order, until ``None``."""
        while (line := self._outbox.get()) is not None:
            try:
                self.stdin.write(line)
                self.stdin.flush()
            except (OSError, ValueError):  # the writer is gone: the reader reports its reason
                return

    def send(self, request: dict) -> None:
        """Queue ``request`` for the writer (never blocks); raises the writer's error if it
        has reported one."""
        self.check()
        self._outbox.put(json.dumps(request) + "\n")

    def drain(self, timeout: float = 60.0) -> None:
        """Hand every queued request to the writer and close its input."""
        if self._sender.is_alive():
            self._outbox.put(None)
            self._sender.join(timeout)
        with contextlib.suppress(OSError):
            self.stdin.close()

    def check(self) -> None:
        """Raise the writer's error if it reported one."""
        while self.error is None and not self.replies.empty():
            reply = self.replies.get_nowait()
            if "error" in reply:
                self.error = reply["error"]
            else:  # an answer nobody waits for yet: kept for its wait_for
                self.early.append(reply)
        if self.error is not None:
            from derelayl.io.mlflow_store import StoreError

            raise StoreError(f"MLflow ({self.uri}): {self.error}")

    def wait_for(self, key: str, timeout: float = 600.0) -> Any:
        """The next reply's ``key`` (a StoreError if the writer failed instead)."""
        from derelayl.io.mlflow_store import StoreError

        if self.error is not None:
            raise StoreError(f"MLflow ({self.uri}): {self.error}")
        try:
            reply = self.early.pop(0) if self.early else self.replies.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise StoreError(f"MLflow ({self.uri}): no answer in {timeout:.0f}s") from None
        if "error" in reply:
            self.error = reply["error"]
            raise StoreError(f"MLflow ({self.uri}): {self.error}")
        return reply.get(key)

    def close(self) -> None:
        """Stop the writer without a run (a refused run): nothing is written."""
        if self.proc.poll() is None:
            self.drain(timeout=10)
            try:
                self.proc.wait(timeout=10)
            except Exception:
                self.proc.kill()


class MlflowTracker(Observer):
    """One run's MLflow record, written by the writer process: params, metrics (batched, with
    at most ``max_points`` points a curve), tags, artifacts and the final status.

    The run starts without waiting for the writer to create it: its id arrives while the run
    computes (``run_id`` waits for it; ``on_started`` callbacks get it as soon as it is known).
    """

    def __init__(
        self,
        writer: WriterProcess,
        experiment: str,
        *,
        artifact_location: str | None = None,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        flush_every_s: float = 1.0,
        max_points: int = 1000,
        stale: list | tuple = (),
    ):
        self.writer = writer
        self.tracking_uri = writer.uri
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        writer.send(
            {
                "op": "start",
                "experiment": experiment,
                "artifact_location": artifact_location,
                "run_name": run_name,
                "tags": all_tags,
                "stale": list(stale),
            }
        )
        self._run_id: str | None = None
        self._on_started: list[Callable[[str], None]] = []
        self._pending: list = []
        self._tags: dict[str, str] = {}
        self.flush_every_s = float(flush_every_s)
        self._last_flush = time.monotonic()
        self.max_points = int(max_points)
        # the curves' strides (hops, rounds) and last steps, set when the run starts
        self.strides: dict[str, tuple[int, int | None]] = {"hop": (1, None), "round": (1, None)}

    # -- the run's id --------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        """The MLflow run's id (waits for the writer to have created the run)."""
        if self._run_id is None:
            self.writer.ready()  # the replies come in order: the store's, then the run's
            self._run_id = str(self.writer.wait_for("run_id"))
            for callback in self._on_started:
                callback(self._run_id)
        return self._run_id

    @property
    def known_run_id(self) -> str | None:
        """The run's id if it has come (never waits)."""
        return self._run_id

    def started(self) -> bool:
        """Whether the run's id is known, fetching it if it has come (never blocks)."""
        if self._run_id is None and self.writer.answered() >= (1 if self.writer.opened else 2):
            _ = self.run_id
        return self._run_id is not None

    def on_started(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(run_id)`` once the run's id is known (now, if it is)."""
        self._on_started.append(callback)
        if self._run_id is not None:
            callback(self._run_id)

    # -- logging -------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        self.writer.send({"op": "params", "params": {k: str(v)[:6000] for k, v in params.items()}})

    def log_metrics(self, metrics: Mapping[str, float | None], step: int) -> None:
        now = int(time.time() * 1000)
        self._pending.extend(
            [k, float(v), now, int(step)] for k, v in metrics.items() if v is not None
        )
        if len(self._pending) >= 20 * MAX_BATCH:
            self.flush()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tags written with the next flush (the last value of a key wins)."""
        self._tags.update({k: str(v) for k, v in tags.items()})

    def flush(self) -> None:
        """Hand what is pending to the writer (it writes while the run goes on)."""
        with critical():
            if self._pending or self._tags:
                self.writer.send({"op": "log", "metrics": self._pending, "tags": self._tags})
            self._pending, self._tags = [], {}
        self._last_flush = time.monotonic()

    def flush_due(self) -> None:
        """Flush at a round's end unless the last flush was under ``flush_every_s`` ago."""
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()
        self.started()  # the run's id, for on_started, as soon as it has come

    def log_artifacts(self, paths: list[Path], artifact_path: str | None = None) -> None:
        self.writer.send(
            {"op": "artifacts", "paths": [str(p) for p in paths], "artifact_path": artifact_path}
        )

    def end(self, status: str = "FINISHED") -> None:
        """Everything written, the run closed with ``status``: returns when the writer is done."""
        self.flush()
        with critical():
            _ = self.run_id  # the earlier replies first: the end's "ok" is the last one
            self.writer.send({"op": "end", "status": status})
            self.writer.wait_for("ok")
            self.writer.drain()
            self.writer.proc.wait(timeout=60)

    # -- observer ------------------------------------------------------------------------------
    def on_run_start(self, info):
        for unit, steps in (
            ("hop", info.get("total_hops")),
            ("round", info.get("rounds") or info.get("expected_rounds")),
        ):
            if steps and self.max_points > 0:
                self.strides[unit] = (max(1, math.ceil(int(steps) / self.max_points)), int(steps))

    def on_run_end(self, result):
        # the last rounds' values go to the writer now: it writes them while the run draws its
        # figures and writes its files, instead of after
        self.flush()

    def logged(self, unit: str, step: int) -> bool:
        """Whether a hop's or round's values go to MLflow: every one, or of a long run every
        ``stride``-th, the first and the last."""
        every, last = self.strides[unit]
        return every == 1 or step == 1 or step % every == 0 or step == last

    def on_hop(self, record: HopRecord):
        if not self.logged("hop", record.hop):
            return
        values = {k: getattr(record, k) for k in HOP_KEYS}
        self.log_metrics(values, step=record.hop)
        self.log_metrics(
            {f"by_samples/{k}": values[k] for k in BY_SAMPLES_KEYS}, step=record.samples_seen
        )

    def on_round(self, record: RoundRecord):
        if record.metrics and self.logged("round", record.round):
            self.log_metrics(record.metrics, step=record.round)
            self.log_metrics(
                {f"by_samples/{k}": record.metrics.get(k) for k in BY_SAMPLES_KEYS},
                step=record.samples_seen,
            )
        self.flush_due()
