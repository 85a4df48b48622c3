"""Participants' behaviours: honest, or one of the adversaries every algorithm faces.

The same codes, and the same actions, for DeRelayL and the FL baselines: a ``dropout`` takes the
model and returns nothing; a ``free_rider`` returns the model it received unchanged; a
``label_flip`` adversary trains on labels l -> L-1-l; a ``noise`` adversary returns the weights
it received plus N(0, std^2) instead of training (:func:`add_weight_noise`, stream
``noise/<round>/<participant>``); ``sybil`` identities are one actor under many names, sharing
its data (:func:`adversarial_data`) and bidding all their coins in DeRelayL's auction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

from derelayl.data.participants import ParticipantData
from derelayl.sim.errors import ConfigError
from derelayl.sim.seeding import torch_generator

BEHAVIOURS = ("honest", "dropout", "free_rider", "label_flip", "noise", "sybil")
HONEST, DROPOUT, FREE_RIDER, LABEL_FLIP, NOISE, SYBIL = range(len(BEHAVIOURS))


def assign_behaviours(
    n: int, fractions: Mapping[str, float], rng: np.random.Generator, exclude: tuple[int, ...] = ()
) -> np.ndarray:
    """Behaviour codes: round(fraction x n) participants of each kind, the rest honest.

    Participants in ``exclude`` (the genesis participant) stay honest.
    """
    total = 0.0
    for name, frac in fractions.items():
        if name not in BEHAVIOURS or name == "honest":
            raise ConfigError(
                f"unknown participants.behaviour {name!r}; allowed: {', '.join(BEHAVIOURS[1:])}"
            )
        if not 0 <= frac <= 1:
            raise ConfigError(f"participants.behaviour.{name} must be in [0, 1] (got {frac})")
        total += frac
    if total > 1 + 1e-9:
        raise ConfigError(
            f"participants.behaviour fractions sum to {total:g}; they must sum "
            f"to at most 1 (the rest is honest)"
        )
    codes = np.full(n, HONEST, dtype=np.int8)
    candidates = rng.permutation(np.setdiff1d(np.arange(n), np.asarray(exclude, dtype=np.int64)))
    start = 0
    for name in BEHAVIOURS[1:]:
        count = int(round(fractions.get(name, 0.0) * n))
        codes[candidates[start : start + count]] = BEHAVIOURS.index(name)
        start += count
    return codes


def adversarial_data(
    participants: list[ParticipantData], behaviour: np.ndarray, num_classes: int
) -> list[ParticipantData]:
    """Label flippers train on l -> L-1-l; all sybil identities share one actor's data."""
    out = list(participants)
    sybils = np.flatnonzero(behaviour == SYBIL)
    for i in np.flatnonzero(behaviour == LABEL_FLIP):
        p = out[i]
        out[i] = ParticipantData(p.pid, p.x, num_classes - 1 - p.y)
    for i in sybils[1:]:
        actor = out[sybils[0]]
        out[i] = ParticipantData(int(i), actor.x, actor.y)
    return out


def add_weight_noise(
    tensors: Iterable[torch.Tensor], std: float, seed: int, round_: int, participant: int
) -> None:
    """A ``noise`` adversary's model: the floating-point tensors it received plus N(0, std^2),
    in place, drawn from the stream ``noise/<round>/<participant>``."""
    import torch

    gen = torch_generator(seed, "noise", round_, participant)
    with torch.no_grad():
        for tensor in tensors:
            if tensor.is_floating_point():
                tensor.add_(std * torch.randn(tensor.shape, generator=gen))
