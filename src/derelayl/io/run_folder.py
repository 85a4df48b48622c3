"""One run, one folder: the run folder's lock, what a folder may be entered for, and the record
of what was written there.

A run takes an exclusive lock on ``<run folder>/.lock`` (``fcntl.flock``; the kernel drops it
when the process dies, SIGKILL included) and keeps it for its whole life; a second process aimed
at a held folder is refused before it writes anything. A folder is entered only

- fresh: it does not exist, or holds nothing but what a run that never got going leaves
  (``.lock``, ``.hydra/``, ``train.log``);
- to resume it: it holds an unfinished run (``config.yaml``, no ``metrics.json``) of the same
  config (up to keys that do not change the numbers: tracking, progress printing, the data
  folder); a run with a checkpoint continues from it, one without restarts;
- to re-enter a finished run of the same config (``skip_finished=false``) that has a checkpoint
  to resume from.

Anything else (another config, a run's files without its ``config.yaml``, other files, an old
pickled checkpoint) is refused with one line, and the folder is left byte for byte as it was:
Hydra's own record (``.hydra/``) and the ``train.log`` handler are written by
:meth:`RunFolder.accept`, after the decision, not by Hydra before the task starts (the primary
config sets ``hydra.output_subdir: null`` and keeps the log file handler off).

Why a hand-written lock rather than the ``filelock`` package: it must never block (a held folder
is an error, not a wait), never truncate the lock file of a live holder, and say who holds it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from derelayl.io.checkpoint import LEGACY_PICKLE
from derelayl.sim.errors import ConfigError

log = logging.getLogger("derelayl")

LOCK_FILE = ".lock"
HYDRA_DIR = ".hydra"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
RUNS_FILE = "mlflow_runs.json"
# what a run that stopped before writing its config may leave; a folder holding only these is fresh
LEFTOVERS = {LOCK_FILE, HYDRA_DIR, "train.log"}
# config keys that may differ between two launches of the same run (they change no number):
# where results are tracked, how often progress is printed, where data files are read from
VOLATILE_KEYS = ("tracking", "progress_every", "paths", "dataset.root", "skip_finished")
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"

# folders Hydra is about to create for this process's run (set by RunFolderCallback): path ->
# the folders that did not exist before, deepest first
_HYDRA_CREATED: dict[Path, list[Path]] = {}


class FolderRefused(ConfigError):
    """The run folder cannot be used by this run (one line: why, and what to do)."""


class FolderLock:
    """A non-blocking exclusive ``flock`` on ``<folder>/.lock``, held until :meth:`release`."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_FILE
        self.fd: int | None = None
        self.created = False

    def acquire(self) -> bool:
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise
        self.fd, self.created = fd, created
        return True

    def holder(self) -> str:
        try:
            text = self.path.read_text().strip()
        except OSError:
            text = ""
        return text or "another process"

    def stamp(self) -> None:
        """Write who holds the lock (pid, host, start time) into the lock file."""
        if self.fd is None:
            return
        text = (
            f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        ).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, text, 0)

    def release(self, remove: bool = False) -> None:
        if self.fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def comparable(config: Any) -> dict[str, Any]:
    """A resolved config as ``{"a.b": value}`` without the keys that may change on a resume."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = node

    walk("", config)
    return {
        k: v
        for k, v in flat.items()
        if not any(k == v_ or k.startswith(v_ + ".") for v_ in VOLATILE_KEYS)
    }


def fingerprint(resolved_config: dict[str, Any]) -> str:
    """What must match for a run folder to be resumed: SHA-256 of the config without the
    volatile keys (tracking, progress printing, the data folder, skip_finished)."""
    from derelayl.protocol.ledger import canonical_json, sha256_hex

    return sha256_hex(canonical_json(comparable(resolved_config)))


def first_difference(before: dict[str, Any], now: dict[str, Any]) -> str:
    for key in sorted(set(before) | set(now)):
        if before.get(key, "<absent>") != now.get(key, "<absent>"):
            return f"{key}: {before.get(key, '<absent>')!r} there, {now.get(key, '<absent>')!r} now"
    return ""


@dataclass
class HydraRecord:
    """What Hydra would have written into the run folder: ``.hydra/*.yaml`` and the log file."""

    documents: dict[str, str] = field(default_factory=dict)
    log_file: str | None = None


@dataclass
class RunFolder:
    """A claimed run folder: locked, inspected, and entered as ``fresh``, ``resume`` or
    ``finished``. :meth:`claim` refuses (and leaves the folder as it was) or returns it."""

    path: Path
    state: str
    lock: FolderLock
    created: list[Path] = field(default_factory=list)
    has_checkpoint: bool = False
    _handler: logging.Handler | None = None

    @classmethod
    def claim(
        cls, path: str | Path, resolved_config: dict[str, Any], *, checkpoints: tuple[str, ...] = ()
    ) -> RunFolder:
        path = Path(path)
        created = _hydra_created(path)
        missing = []
        probe = path
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        if not probe.is_dir():
            raise FolderRefused(f"cannot create the run folder {path}: {probe} is not a folder")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise FolderRefused(
                f"cannot create the run folder {path}: {err.strerror} "
                f"(choose a writable hydra.run.dir)"
            ) from None
        created += [p for p in missing if p not in created]
        lock = FolderLock(path)
        try:
            acquired = lock.acquire()
        except OSError as err:
            _remove_empty(created)
            raise FolderRefused(
                f"cannot lock the run folder {path}: {err.strerror} (choose a "
                f"writable hydra.run.dir)"
            ) from None
        if not acquired:
            raise FolderRefused(
                f"{path} is in use by a running run ({lock.holder()}); one run, "
                f"one folder: wait for it, or use another hydra.run.dir"
            )
        folder = cls(path, "fresh", lock, created)
        try:
            folder._inspect(resolved_config, checkpoints)
        except BaseException:
            folder.release(refused=True)
            raise
        return folder

    def _inspect(self, resolved_config: dict[str, Any], checkpoints: tuple[str, ...]) -> None:
        import yaml

        path = self.path
        if (path / LEGACY_PICKLE).exists():
            raise FolderRefused(
                f"{path / LEGACY_PICKLE} is a pickled checkpoint from an older version; it is "
                f"not read (unpickling a file can run code): use a new hydra.run.dir"
            )
        entries = sorted(p.name for p in path.iterdir())
        self.has_checkpoint = any((path / name).is_file() for name in checkpoints)
        config = path / CONFIG_FILE
        if not config.is_file():
            foreign = [e for e in entries if e not in LEFTOVERS]
            if foreign:
                shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
                raise FolderRefused(
                    f"{path} holds files ({shown}) but no run config ({CONFIG_FILE}): it is not "
                    f"a run this command can resume, and it will not be overwritten; use a new "
                    f"or empty hydra.run.dir"
                )
            return  # fresh
        try:
            before = yaml.safe_load(config.read_text())
            if not isinstance(before, dict):
                raise ValueError("not a mapping")
        except (OSError, ValueError, UnicodeDecodeError, yaml.YAMLError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise FolderRefused(
                f"{config} is not a run config ({first}); {path} will not be "
                f"overwritten: use a new hydra.run.dir"
            ) from None
        a, b = comparable(before), comparable(resolved_config)
        if a != b:
            raise FolderRefused(
                f"{path} holds a run with a different config ({first_difference(a, b)}); use a "
                f"new hydra.run.dir, or the same config to resume it"
            )
        finished = (path / METRICS_FILE).is_file()
        if finished and not self.has_checkpoint:
            raise FolderRefused(
                f"{path} holds a finished run of this config without a checkpoint to resume "
                f"from; it will not be overwritten: set skip_finished=true to reuse it, or use a "
                f"new hydra.run.dir"
            )
        self.state = "finished" if finished else "resume"

    # -- after the decision ------------------------------------------------------------------
    def accept(self, record: HydraRecord | None = None) -> None:
        """The run goes ahead: stamp the lock, write Hydra's record, start the log file."""
        self.lock.stamp()
        if record is None:
            return
        if record.documents:
            hydra_dir = self.path / HYDRA_DIR
            hydra_dir.mkdir(exist_ok=True)
            for name, text in record.documents.items():
                (hydra_dir / name).write_text(text, encoding="utf-8")
        if record.log_file:
            handler = logging.FileHandler(self.path / record.log_file, mode="a", encoding="utf-8")
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            logging.getLogger().addHandler(handler)
            self._handler = handler

    def release(self, refused: bool = False) -> None:
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler.close()
            self._handler = None
        self.lock.release(remove=refused and self.lock.created)
        if refused:
            _remove_empty(self.created)

    # -- MLflow runs of this folder (to close stale ones, and to find the ledger's anchor) ----
    def tracked_runs(self) -> list[dict[str, Any]]:
        return read_tracked_runs(self.path)

    def record_tracking(self, tracking_uri: str, run_id: str) -> None:
        runs = [r for r in self.tracked_runs() if r.get("run_id") != run_id]
        runs.append(
            {
                "run_id": run_id,
                "tracking_uri": tracking_uri,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
        )
        tmp = self.path / (RUNS_FILE + ".tmp")
        tmp.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
        tmp.replace(self.path / RUNS_FILE)


def read_tracked_runs(folder: str | Path) -> list[dict[str, Any]]:
    """The MLflow runs a run folder was tracked in, oldest first ([] if none or unreadable)."""
    try:
        doc = json.loads((Path(folder) / RUNS_FILE).read_text())
        runs = doc.get("runs") if isinstance(doc, dict) else None
    except (OSError, ValueError, UnicodeDecodeError):
        return []
    if not isinstance(runs, list):
        return []
    return [
        r
        for r in runs
        if isinstance(r, dict)
        and isinstance(r.get("run_id"), str)
        and isinstance(r.get("tracking_uri"), str)
    ]


def discard_created(path: str | Path) -> None:
    """A run refused before it claimed its folder: remove the (empty) folders Hydra made for it."""
    _remove_empty(_hydra_created(Path(path)))


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders this run created, deepest first, as long as they are empty."""
    for folder in sorted(set(folders), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _hydra_created(path: Path) -> list[Path]:
    """Folders Hydra created for this run before the task started (ours to remove if the run is
    refused), as RunGuard noted them in run mode; none otherwise (a sweep job's folder inside
    its sweep folder is left, empty)."""
    path = Path(path)
    for known, created in _HYDRA_CREATED.items():
        if known.resolve() == path.resolve():
            return list(created)
    return []


def writable_target(path: Path) -> list[Path]:
    """The folders missing above and at ``path``; a one-line error if it cannot be created."""
    missing = []
    probe = Path(path)
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise FolderRefused(f"cannot create the run folder {path}: {probe} is not a folder")
    if missing and not os.access(probe, os.W_OK | os.X_OK):
        raise FolderRefused(
            f"cannot create the run folder {path}: {probe} is not writable "
            f"(choose a writable hydra.run.dir)"
        )
    if not missing and not os.access(probe, os.W_OK | os.X_OK):
        raise FolderRefused(
            f"the run folder {path} is not writable (choose a writable hydra.run.dir)"
        )
    return missing


def note_hydra_run_dir(path: Path) -> None:
    """Called before Hydra creates the run folder: remember which folders it will create."""
    _HYDRA_CREATED[Path(path)] = writable_target(Path(path))
