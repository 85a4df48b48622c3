"""SIGTERM and SIGINT end a run cleanly: the signal becomes a :class:`RunInterrupted` raised in
the main thread, except inside a critical section (a database write, a checkpoint), where it
is held until the section ends, so an MLflow transaction or a file is never cut in half.

After the first signal further ones are ignored while the run closes its MLflow run as KILLED
(SIGKILL remains the way to stop a process that will not close).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from derelayl.sim.errors import RunInterrupted

_SIGNALS: dict[int, str] = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}
_state: dict[str, Any] = {"depth": 0, "pending": None, "fired": False, "installed": 0}


def _raise(signum: int) -> None:
    _state["fired"] = True
    raise RunInterrupted(signum, _SIGNALS.get(signum, f"signal {signum}"))


def _handler(signum, frame) -> None:
    if _state["fired"]:
        return
    if _state["depth"]:
        _state["pending"] = signum
        return
    _raise(signum)


@contextmanager
def critical() -> Iterator[None]:
    """Hold SIGTERM/SIGINT until the block has finished."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if not _state["depth"] and _state["pending"] is not None and not _state["fired"]:
            signum, _state["pending"] = _state["pending"], None
            _raise(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGINT into RunInterrupted for the block (main thread only; re-entrant)."""
    if threading.current_thread() is not threading.main_thread() or _state["installed"]:
        yield
        return
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    for s in _SIGNALS:
        signal.signal(s, _handler)
    _state.update(installed=1, fired=False, pending=None, depth=0)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _state.update(installed=0, pending=None)
