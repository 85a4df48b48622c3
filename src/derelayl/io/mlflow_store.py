"""Opening an MLflow tracking store: safely when many processes start at once, quickly when
it is not there, and never by creating a store where one only reads.

- SQLite: MLflow creates the schema of a fresh ``mlflow.db`` with Alembic migrations that are
  not safe to run twice at once (``table _alembic_tmp_tags already exists``, and the store stays
  broken). The first client of a store is opened under an exclusive ``flock`` on the folder that
  holds it, so concurrent first runs wait for one another instead of racing (no lock file is
  left behind). Readers (``create=False``) are refused if the file does not exist.
- HTTP(S): the server is probed with a TCP connection first (5 s), MLflow's own request
  timeout and retries are bounded (unless set in the environment), so a dead or wrong address
  fails in seconds with one line instead of retrying for minutes, and one read checks the
  credentials (a server with ``--app-name basic-auth``) before a run writes anything.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from derelayl.sim.errors import ConfigError

PROBE_TIMEOUT_S = 5.0
# bounded HTTP behaviour for a tracking server (the environment wins when it sets them)
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


class StoreError(ConfigError):
    """The tracking store cannot be used (one line: which store, why, what to do)."""


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive flock on a folder (no file created); a no-op where folders cannot be locked."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:  # e.g. NFS: flock on a folder is not supported
            if err.errno not in (errno.EBADF, errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP):
                raise
        yield
    finally:
        os.close(fd)


def probe_server(uri: str) -> None:
    parsed = urlparse(uri)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as err:
        why = err.strerror or str(err) or type(err).__name__
        if isinstance(err, socket.timeout):
            why = f"no answer within {PROBE_TIMEOUT_S:.0f} s"
        raise StoreError(
            f"cannot reach the MLflow tracking server {uri} ({why}); start it "
            f"(README, 'MLflow server for teams'), fix tracking.uri, or use "
            f"tracking=none"
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _refusal(uri: str, err: BaseException) -> str:
    """One line for a server that answered but refused (credentials, permissions)."""
    import re

    code = re.search(r"error code (\d{3})", str(err))
    if code and code.group(1) in ("401", "403"):
        why = "not authenticated" if code.group(1) == "401" else "permission denied"
        return (
            f"the MLflow tracking server {uri} refused the request (HTTP {code.group(1)}: "
            f"{why}); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an "
            f"account on that server"
        )
    return f"the MLflow tracking server {uri} refused the request: {_first_line(err)[:200]}"


def check_server(uri: str):
    """Probe an HTTP(S) tracking server and make one authenticated read; the client."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    probe_server(uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        client.search_experiments(max_results=1)
    except MlflowException as err:
        raise StoreError(_refusal(uri, err)) from None
    except Exception as err:  # requests' connection errors after the probe
        raise StoreError(
            f"the MLflow tracking server {uri} did not answer: {_first_line(err)}"
        ) from None
    return client


def open_client(uri: str, *, create: bool = True):
    """An ``MlflowClient`` whose store is ready; one-line StoreError if it cannot be."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    path = sqlite_path(uri)
    if path is not None:
        if not create and not path.is_file():
            raise StoreError(
                f"no MLflow store at {path} (tracking URI {uri}); run from the "
                f"folder that holds mlflow.db, or pass its URI"
            )
        if not path.parent.is_dir():
            raise StoreError(f"tracking.uri {uri}: the folder {path.parent} does not exist")
        if create and not os.access(path.parent, os.W_OK | os.X_OK) and not path.exists():
            raise StoreError(f"tracking.uri {uri}: the folder {path.parent} is not writable")
        try:
            with _folder_lock(path.parent):
                client = MlflowClient(tracking_uri=uri)
                _ = client._tracking_client.store  # creates (or checks) the schema under the lock
        except MlflowException as err:
            raise StoreError(
                f"the MLflow store {uri} cannot be opened: {_first_line(err)}"
            ) from None
        except Exception as err:  # sqlalchemy errors: a damaged or foreign file
            raise StoreError(
                f"the MLflow store {uri} cannot be opened ({type(err).__name__}: "
                f"{_first_line(err)})"
            ) from None
        return client
    if urlparse(uri).scheme in ("http", "https"):
        return check_server(uri)
    try:
        client = MlflowClient(tracking_uri=uri)
        _ = client._tracking_client.store  # opens (or checks) the store
    except Exception as err:
        raise StoreError(f"the MLflow store {uri} cannot be opened: {_first_line(err)}") from None
    return client


def preflight(uri: str) -> None:
    """Check, without creating anything, that a run can track to ``uri`` (one-line StoreError)."""
    path = sqlite_path(uri)
    if path is not None:
        if path.exists():
            if not path.is_file() or not os.access(path, os.R_OK | os.W_OK):
                raise StoreError(f"tracking.uri {uri}: {path} is not a writable file")
        elif not path.parent.is_dir():
            raise StoreError(f"tracking.uri {uri}: the folder {path.parent} does not exist")
        elif not os.access(path.parent, os.W_OK | os.X_OK):
            raise StoreError(f"tracking.uri {uri}: the folder {path.parent} is not writable")
        return
    if urlparse(uri).scheme in ("http", "https"):
        probe_server(uri)  # reachable (the writer process then checks the credentials)


def close_stale_runs(tracked: list[dict], tracker) -> list[str]:
    """Close as KILLED the MLflow runs a run folder recorded that are still RUNNING.

    Only called by the process that holds the folder's lock, so a RUNNING run recorded there
    belongs to a process that died (SIGKILL, a power cut) before it could close it.
    """
    import logging

    log = logging.getLogger("derelayl")
    closed = []
    for entry in tracked:
        if entry["run_id"] == tracker.run_id:
            continue
        try:
            client = (
                tracker.client
                if entry["tracking_uri"] == tracker.tracking_uri
                else open_client(entry["tracking_uri"], create=False)
            )
            if client.get_run(entry["run_id"]).info.status == "RUNNING":
                client.set_terminated(entry["run_id"], "KILLED")
                closed.append(entry["run_id"])
                log.info(
                    "closed MLflow run %s, left RUNNING by a killed run, as KILLED", entry["run_id"]
                )
        except Exception as err:  # deleted, or a store that is gone: nothing to close
            log.info("could not check MLflow run %s: %s", entry["run_id"], _first_line(err))
    return closed
