"""Persistence of a DeRelayL run: the ledger (JSONL), model weights (content-addressed), the
checkpoint of the last settled round, and the per-round coin balances.

Write order per round: ledger blocks, then coins, then the checkpoint (atomic rename). A run
killed at any moment (SIGKILL included) therefore has a checkpoint of some settled round c and
possibly more; resuming truncates the ledger and coin file back to c and replays from there,
which reproduces the lost rounds exactly (every round has its own random stream).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from derelayl.io.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointError,
    load_checkpoint,
    refuse_legacy,
    save_checkpoint,
)
from derelayl.io.signals import critical
from derelayl.protocol.ledger import GENESIS_HASH, Ledger, block_line, canonical_json
from derelayl.protocol.royalties import RoyaltyBook
from derelayl.protocol.runner import EconomyObserver
from derelayl.protocol.state import EconomyState
from derelayl.sim.errors import ConfigError

LEDGER_FILE = "ledger.jsonl"
COINS_FILE = "coins.f64"
ROUNDS_FILE = "rounds.jsonl"
MODELS_DIR = "models"


class FileModelStore:
    """Weights under ``<hash>.pt``; recent ones also cached in memory."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cache: dict[str, dict[str, torch.Tensor]] = {}
        # models the last checkpoint refers to: never deleted before the next checkpoint
        self.pinned: set[str] = set()

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.pt"

    def put(self, key, state):
        self.cache[key] = state
        path = self.path(key)
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            torch.save(state, tmp)
            tmp.replace(path)

    def get(self, key):
        if key not in self.cache:
            path = self.path(key)
            try:  # weights_only: plain tensors, never code
                state = torch.load(path, weights_only=True, map_location="cpu")
                if not isinstance(state, dict):
                    raise ValueError("not a state_dict")
            except Exception as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ConfigError(
                    f"{path} cannot be read as model weights ({first[:200]}); run "
                    f"`derelayl-ledger verify {self.dir.parent}`"
                ) from None
            self.cache[key] = state
        return self.cache[key]

    def retain(self, keys):
        keys = set(keys) | self.pinned
        for key in list(self.cache):
            if key not in keys:
                del self.cache[key]
        for path in self.dir.glob("*.pt"):
            if path.stem not in keys:
                path.unlink()

    def keys(self) -> set[str]:
        return {p.stem for p in self.dir.glob("*.pt")}


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file (ledger blocks); a torn last line (killed mid-write) is ignored."""
    blocks: list[dict[str, Any]] = []
    if not Path(path).exists():
        return blocks
    with open(path) as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            blocks.append(json.loads(line))
    return blocks


class EconomyFiles(EconomyObserver):
    def __init__(
        self,
        output_dir: Path,
        num_participants: int,
        fingerprint: str,
        checkpoint_every: int = 1,
        total_rounds: int | None = None,
        store: FileModelStore | None = None,
    ):
        if checkpoint_every < 1:
            raise ConfigError(f"derelayl.checkpoint_every must be >= 1 (got {checkpoint_every})")
        self.dir = Path(output_dir)
        self.n = num_participants
        self.fingerprint = fingerprint
        self.every = int(checkpoint_every)
        self.total_rounds = total_rounds
        self.store = store
        self.ledger_path = self.dir / LEDGER_FILE
        self.coins_path = self.dir / COINS_FILE
        self.checkpoint_path = self.dir / CHECKPOINT_FILE
        self.rounds_path = self.dir / ROUNDS_FILE
        self._appending: dict[Path, IO[Any]] = {}  # the files a run appends to, opened once

    # -- resume ------------------------------------------------------------------------------
    def load(self) -> dict[str, Any] | None:
        """The last checkpoint (files truncated back to it), or None for a fresh run."""
        refuse_legacy(self.dir)
        self.close()
        if not self.checkpoint_path.exists():
            for path in (self.ledger_path, self.coins_path, self.rounds_path):
                path.unlink(missing_ok=True)
            return None
        ckpt = read_checkpoint(self.checkpoint_path, self.n)
        if ckpt["fingerprint"] != self.fingerprint:
            raise ConfigError(
                f"{self.dir} holds a DeRelayL run with a different config; use a new output "
                f"directory (hydra.run.dir=...) or the same config to resume it"
            )
        settled = ckpt["state"].round
        try:
            blocks = [b for b in read_ledger(self.ledger_path) if b["round"] < settled]
            history = read_ledger(self.rounds_path)[:settled]  # same torn-line tolerant JSONL
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as err:
            raise ConfigError(
                f"{self.dir}: the ledger or rounds.jsonl cannot be read ({err}); "
                f"run `derelayl-ledger verify {self.dir}`"
            ) from None
        with open(self.ledger_path, "w") as fh:
            fh.writelines(canonical_json(b) + "\n" for b in blocks)
        head = blocks[-1]["hash"] if blocks else GENESIS_HASH
        if ckpt["ledger"] is not None and tuple(ckpt["ledger"]) != (head, len(blocks)):
            raise ConfigError(
                f"{self.ledger_path} does not match the checkpoint; run "
                f"`derelayl-ledger verify {self.dir}`"
            )
        if self.store is not None:
            self.store.pinned = set(ckpt["perf"].get("live_keys", ()))
        with open(self.coins_path, "r+b" if self.coins_path.exists() else "wb") as fh:
            fh.truncate(settled * self.n * 8)
        with open(self.rounds_path, "w") as fh:
            fh.writelines(json.dumps(row) + "\n" for row in history)
        ckpt["history"] = history
        return ckpt

    # -- observer ------------------------------------------------------------------------------
    def on_run_start(self, info):
        self.dir.mkdir(parents=True, exist_ok=True)

    def on_blocks(self, blocks):
        if blocks:
            with critical():  # whole lines, or none
                fh = self._append(self.ledger_path)
                fh.writelines(block_line(b) + "\n" for b in blocks)
                fh.flush()

    def on_settled(self, state, perf_state, ledger: Ledger | None, history):
        # a round's files are written whole: SIGTERM/SIGINT wait until they are
        with critical():
            coins = self._append(self.coins_path, binary=True)
            coins.write(state.coins.astype(np.float64).tobytes())
            coins.flush()
            rounds = self._append(self.rounds_path)
            rounds.write(json.dumps(history[-1]) + "\n")
            rounds.flush()
            last = self.total_rounds is not None and state.round >= self.total_rounds
            if state.round % self.every == 0 or last:
                self.save(state, perf_state, ledger)

    def on_run_end(self, result):
        self.close()

    def _append(self, path: Path, binary: bool = False) -> IO[Any]:
        """``path`` open for appending, from the run's first write to its end (opening and
        closing three files a round cost more than a random-walk round's writes)."""
        fh = self._appending.get(path)
        if fh is None:
            fh = self._appending[path] = open(path, "ab" if binary else "a")  # noqa: SIM115
        return fh

    def close(self) -> None:
        """Close the files the run appends to (every round was flushed as it settled)."""
        for fh in self._appending.values():
            fh.close()
        self._appending.clear()

    def save(self, state, perf_state, ledger):
        save_checkpoint(
            self.checkpoint_path,
            {
                "fingerprint": self.fingerprint,
                "state": {
                    f.name: (
                        state.royalties.state_dict()
                        if f.name == "royalties"
                        else getattr(state, f.name)
                    )
                    for f in dataclasses.fields(state)
                },
                "perf": perf_state,
                "ledger": None if ledger is None else [ledger.head, ledger.length],
            },
        )
        if self.store is not None:
            self.store.pinned = set(perf_state.get("live_keys", ()))

    def coins_matrix(self) -> np.ndarray:
        """(rounds x participants) balances after every settled round."""
        raw = (
            np.fromfile(self.coins_path, dtype=np.float64)
            if self.coins_path.exists()
            else np.zeros(0)
        )
        return raw.reshape(-1, self.n)


# EconomyState fields that are per-participant vectors, and 2-D fields with N columns
_VECTORS = (
    "coins",
    "gained",
    "lost",
    "own_version",
    "held_version",
    "own_score",
    "best_score",
    "matches",
    "wins",
    "hops",
    "hop_gain",
    "active",
    "ever_active",
    "behaviour",
    "declared_samples",
    "cost_per_sample",
    "cost_per_transfer",
    "model_value",
    "reservation",
    "utility",
    "active_rounds",
)
_MATRICES = ("recent_utility",)


def _royalty_book(state: Any, num_participants: int) -> RoyaltyBook:
    """The royalty book of a checkpoint, its arrays checked for type and shape."""
    if not isinstance(state, dict) or not isinstance(state.get("levels"), int):
        raise ValueError("state.royalties is not a royalty book")
    if state.get("num_participants") != num_participants:
        raise ValueError(f"state.royalties is not for {num_participants} participants")
    for name in ("trunk", "trunk_decay"):
        value = state.get(name)
        if name in state and (
            not isinstance(value, np.ndarray) or value.shape != (num_participants,)
        ):
            raise ValueError(f"state.royalties.{name} is not a vector of {num_participants}")
    for i in range(state["levels"]):
        for name in (f"mo_{i}", f"parent_{i}"):
            value = state.get(name)
            if (
                not isinstance(value, np.ndarray)
                or value.ndim != 1
                or (
                    len(value)
                    and (
                        value.min() < 0
                        or (name.startswith("mo") and value.max() >= num_participants)
                    )
                )
            ):
                raise ValueError(f"state.royalties.{name} is not a vector of ids")
    return RoyaltyBook.from_state(state)


def read_checkpoint(path: Path, num_participants: int) -> dict[str, Any]:
    """A DeRelayL checkpoint, its economy state rebuilt and checked for shape (one-line errors)."""
    ckpt = load_checkpoint(path)
    try:
        if not isinstance(ckpt.get("fingerprint"), str) or not isinstance(ckpt.get("perf"), dict):
            raise ValueError("no fingerprint or performance state")
        body = ckpt["state"]
        names = {f.name for f in dataclasses.fields(EconomyState)}
        if not isinstance(body, dict) or set(body) != names:
            raise ValueError("economy state fields differ from this version's")
        for name in _VECTORS:
            if not isinstance(body[name], np.ndarray) or body[name].shape != (num_participants,):
                raise ValueError(f"state.{name} is not a vector of {num_participants}")
        body["royalties"] = _royalty_book(body["royalties"], num_participants)
        for name in _MATRICES:
            value = body[name]
            if (
                not isinstance(value, np.ndarray)
                or value.ndim != 2
                or value.shape[1] != num_participants
            ):
                raise ValueError(f"state.{name} is not a matrix with {num_participants} columns")
        if not isinstance(body["owners"], np.ndarray) or body["owners"].ndim != 1:
            raise ValueError("state.owners is not a vector")
        if not isinstance(body["round"], int) or body["round"] < 0:
            raise ValueError("state.round is not a round number")
        for name in ("minted", "burned"):
            if not isinstance(body[name], (int, float)):
                raise ValueError(f"state.{name} is not a number")
        if not isinstance(body["extra"], dict):
            raise ValueError("state.extra is not a mapping")
        ledger = ckpt.get("ledger")
        if ledger is not None and not (
            isinstance(ledger, list)
            and len(ledger) == 2
            and isinstance(ledger[0], str)
            and isinstance(ledger[1], int)
        ):
            raise ValueError("ledger head is not [hash, length]")
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path} is not a valid checkpoint ({err})") from None
    ckpt["state"] = EconomyState(**body)
    return ckpt
