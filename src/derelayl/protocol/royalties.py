"""Lineage royalties that scale: payouts follow the shared trunk of the live lineages.

A win pays ``royalty`` to the model owner (MO) of every model on the winner's lineage, down to the
genesis model. Walking each winner's lineage costs its depth (the round number), and keeping a
per-owner histogram of its lineage (an owners x N matrix) costs N per owner. Neither scales to
N = 100,000 and 1,000 rounds.

What makes it cheap: the lineages of the models alive in a round coalesce a few rounds back (every
owner's model descends from a handful of recent winners, and all of them from one model not far
down). So the book keeps

- the *live tree*: the owners' models and their ancestors down to the most recent common
  ancestor of them all (the *base*), level by level (level 0 is the base, the last level the
  owners' models; every model of a level has the same version), each model with its MO and its
  parent's index in the level below;
- one dense vector for everything from the base down to the genesis model: ``trunk[j]`` = how
  many models of that chain participant j is the MO of (and the same with geometric decay for the
  bounded scheme).

A round's winners are added as a new level; their payout aggregates the number of winners passing
through each model level by level down to the base (a ``bincount`` per level), pays each model's
MO that many coins, and pays the base's count times ``trunk``. Then the tree is pruned to the
winners' ancestors, and the base moves up to their common ancestor, folding the chain between the
old base and the new one into ``trunk``. The cost of a round is the size of its live tree, not its
depth and not N times the owners.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RoyaltyBook:
    """Who owns what along the live lineages (see the module docstring)."""

    num_participants: int
    genesis: int
    gamma: float | None = None  # bounded scheme's decay (None: not tracked)
    # live tree, level 0 = the base; per level: MOs and parent indices into the level below
    mo: list[np.ndarray] = field(default_factory=list)
    parent: list[np.ndarray] = field(default_factory=list)
    depth: int = 0  # version of the base model
    trunk: np.ndarray | None = None  # (N,) MO counts from the base down to the genesis model
    # (N,) sum over the same chain of gamma^(distance below the base), genesis model left out
    trunk_decay: np.ndarray | None = None

    @classmethod
    def genesis_book(
        cls, num_participants: int, genesis: int, gamma: float | None = None
    ) -> RoyaltyBook:
        """The book before round 0: the genesis model (MO: the genesis participant) is the base
        and the only owner model."""
        book = cls(num_participants, genesis, gamma)
        book.mo = [np.array([genesis], dtype=np.int64)]
        book.parent = [np.zeros(1, dtype=np.int64)]
        book.trunk = np.zeros(num_participants)
        book.trunk[genesis] = 1.0
        if gamma is not None:  # the decayed sum leaves the genesis model itself out
            book.trunk_decay = np.zeros(num_participants)
        return book

    @property
    def owner_models(self) -> int:
        """How many models the current owners hold (the last level)."""
        return len(self.mo[-1])

    @property
    def lineage_length(self) -> int:
        """Models on the lineage of an owner's model, genesis model included."""
        return self.depth + len(self.mo)

    # -- a round's payout ----------------------------------------------------------------------
    def payout(
        self, winner_rows: np.ndarray, winner_mos: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """What the lineages of the round's winning models pay, without recording the winners:
        per participant, the number of times it is the MO of a model on a winner's lineage
        (winners' own models and the genesis model included: a win at version v pays v + 1
        coins), and with ``gamma`` the decayed sum (gamma^d for the model d steps below the
        winner's, the genesis model left out: the bounded scheme's weights, which sum to
        sum_{d<v} gamma^d). The winners' models are children of the owner models
        ``winner_rows``, commissioned by ``winner_mos``."""
        paid, decayed, _ = self._walk(
            np.asarray(winner_rows, dtype=np.int64), np.asarray(winner_mos, dtype=np.int64)
        )
        return paid, decayed

    def advance(self, winner_rows: np.ndarray, winner_mos: np.ndarray) -> None:
        """The winners' models become the owner models (nothing changes without winners)."""
        rows = np.asarray(winner_rows, dtype=np.int64)
        mos = np.asarray(winner_mos, dtype=np.int64)
        if len(rows):
            _, _, live = self._walk(rows, mos)
            self._grow(self.mo + [mos], self.parent + [rows], live)

    def settle(
        self, winner_rows: np.ndarray, winner_mos: np.ndarray, weight: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`payout` (times ``weight``), then :meth:`advance`."""
        paid, decayed = self.payout(winner_rows, winner_mos)
        self.advance(winner_rows, winner_mos)
        return paid * weight, (decayed * weight if decayed is not None else None)

    def decay_norm(self) -> float:
        """sum_{d<v} gamma^d for a winner of the next version v: the bounded scheme's total."""
        v = self.depth + len(self.mo)  # the owner models' version is v - 1
        g = self.gamma if self.gamma is not None else 1.0
        return float(v) if g == 1.0 else (1.0 - g**v) / (1.0 - g)

    def _walk(self, rows: np.ndarray, mos: np.ndarray):
        """Winners' counts aggregated level by level down to the base: (paid, decayed, live);
        the last walk is remembered (a round's payout and its advance walk the same winners)."""
        key = (rows.tobytes(), mos.tobytes(), len(self.mo), self.depth)
        last = getattr(self, "_last_walk", None)
        if last is not None and last[0] == key:
            paid, decayed, live = last[1]
            return paid.copy(), (None if decayed is None else decayed.copy()), live
        out = self._walk_levels(rows, mos)
        self._last_walk: tuple | None = (key, out)
        paid, decayed, live = out
        return paid.copy(), (None if decayed is None else decayed.copy()), live

    def _walk_levels(self, rows: np.ndarray, mos: np.ndarray):
        n = self.num_participants
        if len(rows) == 0:
            return np.zeros(n), (np.zeros(n) if self.gamma is not None else None), []
        levels_mo = self.mo + [mos]
        levels_parent = self.parent + [rows]
        gamma = self.gamma
        count: np.ndarray = np.ones(len(rows))
        decay: np.ndarray | None = np.ones(len(rows)) if gamma is not None else None
        payees, counts, decays = [mos], [count], [decay]  # one bincount at the end
        live = [np.ones(len(rows), dtype=bool)]  # per level (top first): on a winner's lineage
        for level in range(len(levels_mo) - 1, 0, -1):  # down to the base's level
            below = len(levels_mo[level - 1])
            up = levels_parent[level]
            count = np.bincount(up, weights=count, minlength=below)
            if decay is not None and gamma is not None:  # decay is tracked iff gamma is
                decay = gamma * np.bincount(up, weights=decay, minlength=below)
            on = count > 0
            live.append(on)
            if level - 1 > 0:  # models of the live tree above the base: pay their MOs
                payees.append(levels_mo[level - 1][on])
                counts.append(count[on])
                decays.append(decay[on] if decay is not None else None)
        who = np.concatenate(payees)
        paid = np.bincount(who, weights=np.concatenate(counts), minlength=n)
        paid += count[0] * self.trunk  # the base and everything below it, in one vector
        paid_decay = None
        if decay is not None:
            paid_decay = np.bincount(
                who, weights=np.concatenate([d for d in decays if d is not None]), minlength=n
            )
            paid_decay += decay[0] * self.trunk_decay
        return paid, paid_decay, live[::-1]

    def _grow(self, levels_mo, levels_parent, live) -> None:
        """Keep the winners' ancestors only, and move the base up to their common ancestor."""
        kept_mo, kept_parent = [], []
        remap_below = None
        for mo, parent, on in zip(levels_mo, levels_parent, live):
            keep = np.flatnonzero(on)
            new_parent = parent[keep] if remap_below is None else remap_below[parent[keep]]
            remap = np.full(len(mo), -1, dtype=np.int64)
            remap[keep] = np.arange(len(keep))
            kept_mo.append(mo[keep])
            kept_parent.append(new_parent)
            remap_below = remap
        # every level below the first that holds more than one model is a single chain
        first = 0
        while first + 1 < len(kept_mo) and len(kept_mo[first + 1]) == 1:
            first += 1
        assert self.trunk is not None  # set by genesis_book / from_state
        for level in range(1, first + 1):  # fold the chain from the old base to the new one
            who = int(kept_mo[level][0])
            self.trunk[who] += 1.0
            if self.trunk_decay is not None:
                self.trunk_decay *= self.gamma
                self.trunk_decay[who] += 1.0
        self.depth += first
        self._last_walk = None
        self.mo = kept_mo[first:]
        self.parent = [np.zeros(1, dtype=np.int64)] + kept_parent[first + 1 :]

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        assert self.trunk is not None  # set by genesis_book / from_state
        state = {
            "num_participants": self.num_participants,
            "genesis": self.genesis,
            "gamma": self.gamma,
            "depth": self.depth,
            "trunk": self.trunk.copy(),
            "levels": len(self.mo),
        }
        for i, (mo, parent) in enumerate(zip(self.mo, self.parent)):
            state[f"mo_{i}"], state[f"parent_{i}"] = mo.copy(), parent.copy()
        if self.trunk_decay is not None:
            state["trunk_decay"] = self.trunk_decay.copy()
        return state

    @classmethod
    def from_state(cls, state: dict) -> RoyaltyBook:
        book = cls(
            int(state["num_participants"]),
            int(state["genesis"]),
            None if state["gamma"] is None else float(state["gamma"]),
        )
        book.depth = int(state["depth"])
        book.trunk = np.asarray(state["trunk"], dtype=np.float64).copy()
        levels = int(state["levels"])
        book.mo = [np.asarray(state[f"mo_{i}"], dtype=np.int64).copy() for i in range(levels)]
        book.parent = [
            np.asarray(state[f"parent_{i}"], dtype=np.int64).copy() for i in range(levels)
        ]
        if "trunk_decay" in state:
            book.trunk_decay = np.asarray(state["trunk_decay"], dtype=np.float64).copy()
        return book
