"""Data-only checkpoints: one ``.npz`` of numpy arrays plus a JSON document, nothing that runs.

Nothing read from a run folder may execute code. ``pickle`` (and ``torch.load`` without
``weights_only``) can: a planted file would run on ``derelayl-ledger verify``, the very tool
meant to check a folder someone sent you. So a checkpoint is a zip of ``.npy`` arrays read with
``np.load(..., allow_pickle=False)`` (object arrays are refused) and one JSON document (the
``__json__`` member, UTF-8 bytes) that holds everything else and points at the arrays.

Values that can be stored: ``None``, bools, ints, strings, floats (non-finite ones too), lists
and tuples (read back as lists), dicts with string keys, numpy arrays and scalars, and CPU torch
tensors (read back as tensors). Writes are atomic (temporary file, then rename): a process killed
mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any, cast

import numpy as np

from derelayl.sim.errors import ConfigError

FORMAT = "derelayl-checkpoint/1"
# a run folder's resume point (every algorithm)
CHECKPOINT_FILE = "checkpoint.npz"
_JSON = "__json__"
_TAGS = ("__array__", "__tensor__", "__float__")
# the file name a run folder's checkpoint had before it was data-only; never unpickled
LEGACY_PICKLE = "checkpoint.pkl"


class CheckpointError(ConfigError):
    """A checkpoint that cannot be read (or written) as data; the message is one line."""


def _encode(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise CheckpointError("a checkpoint cannot hold object arrays")
        key = f"a{len(arrays)}"
        arrays[key] = obj
        return {"__array__": key}
    try:
        import torch

        tensor: type[torch.Tensor] | None = torch.Tensor
    except ImportError:  # pragma: no cover - torch is a dependency
        tensor = None
    if tensor is not None and isinstance(obj, tensor):
        key = f"a{len(arrays)}"
        arrays[key] = obj.detach().cpu().contiguous().numpy()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str) or k in _TAGS:
                raise CheckpointError(f"a checkpoint's dict keys must be plain strings (got {k!r})")
            out[k] = _encode(v, arrays)
        return out
    if isinstance(obj, (list, tuple)):
        return [_encode(v, arrays) for v in obj]
    raise CheckpointError(f"a checkpoint cannot hold a {type(obj).__name__}")


def _decode(obj: Any, arrays) -> Any:
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        ((tag, value),) = obj.items()
        if tag == "__float__":
            if value not in ("nan", "inf", "-inf"):
                raise ValueError(f"bad float {value!r}")
            return float(value)
        if tag in ("__array__", "__tensor__"):
            if not isinstance(value, str) or value == _JSON or value not in arrays:
                raise ValueError(f"missing array {value!r}")
            array = arrays[value]
            if tag == "__array__":
                return array
            import torch

            return torch.from_numpy(np.array(array, copy=True))
    return {k: _decode(v, arrays) for k, v in obj.items()}


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically as arrays + JSON; SIGTERM/SIGINT wait until the
    file is complete (a signal raised inside numpy's zip writer would leave it half-written and
    the run's error hidden behind zipfile's)."""
    from derelayl.io.signals import critical

    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    document = {"format": FORMAT, "state": _encode(state, arrays)}
    blob = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    arrays[_JSON] = np.frombuffer(blob, dtype=np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    with critical():
        with open(tmp, "wb") as fh:
            # (typed loosely: mypy matches **arrays against numpy 2's `allow_pickle: bool` too)
            np.savez(fh, **cast(dict[str, Any], arrays))
        os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The state saved by :func:`save_checkpoint`; anything else is a one-line CheckpointError."""
    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("not a derelayl checkpoint")
        with npz:
            if _JSON not in npz.files:
                raise ValueError("not a derelayl checkpoint")
            arrays = {name: npz[name] for name in npz.files}
        document = json.loads(bytes(arrays.pop(_JSON).astype(np.uint8)).decode("utf-8"))
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError(f"unknown format (expected {FORMAT})")
        state = _decode(document.get("state"), arrays)
        if not isinstance(state, dict):
            raise ValueError("no state")
        return state
    except (
        OSError,
        ValueError,
        KeyError,
        EOFError,
        zipfile.BadZipFile,
        UnicodeDecodeError,
        TypeError,
    ) as err:
        why = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path} is not a valid checkpoint ({why})") from None


def refuse_legacy(run_dir: str | Path) -> None:
    """An old pickled checkpoint is never loaded (unpickling can run code): say so in one line."""
    legacy = Path(run_dir) / LEGACY_PICKLE
    if legacy.exists():
        raise CheckpointError(
            f"{legacy} is a pickled checkpoint from an older version; it is not read (unpickling "
            f"a file can run code). Start a new run folder (hydra.run.dir=...), or delete it to "
            f"verify only the ledger"
        )


class RoundCheckpoint:
    """An observer that saves a round-based runner's ``state_dict()`` to ``checkpoint.npz``
    after every round (relay, FL baselines, local, centralized), and loads it to resume.

    The runner is attached after it is built (``checkpoint.runner = runner``): the runner takes
    its observers at construction, this observer needs the runner to read its state.
    """

    def __init__(self, path: str | Path, fingerprint: str):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.runner = None

    # the Observer interface (core.events), duck-typed to keep this module free of the core
    def on_run_start(self, info) -> None: ...

    def on_hop(self, record) -> None: ...

    def on_run_end(self, result) -> None: ...

    def on_round(self, record) -> None:
        if self.runner is not None and getattr(self.runner, "_live", None) is not None:
            save_checkpoint(
                self.path, {"fingerprint": self.fingerprint, "runner": self.runner.state_dict()}
            )

    def load(self) -> dict[str, Any] | None:
        """The saved runner state, or None for a fresh run; a one-line error if unusable."""
        refuse_legacy(self.path.parent)
        if not self.path.exists():
            return None
        ckpt = load_checkpoint(self.path)
        if ckpt.get("fingerprint") != self.fingerprint or not isinstance(ckpt.get("runner"), dict):
            raise CheckpointError(
                f"{self.path.parent} holds a run with a different config (its checkpoint does "
                f"not match); use a new output directory (hydra.run.dir=...) or the same config "
                f"to resume it"
            )
        return ckpt["runner"]
