"""The interface of one training hop: a participant fits the current weights on its data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from derelayl.core.participants import ParticipantData


@dataclass(frozen=True)
class HopStats:
    samples: int  # sample passes (samples x epochs, or steps x batch)
    steps: int  # optimizer steps
    train_loss: float  # mean training loss over the hop's steps


class HopTrainer(Protocol):
    def __call__(self, model: torch.nn.Module, data: ParticipantData,
                 generator: torch.Generator,
                 grad_correction: Callable[[], None] | None = None) -> HopStats:
        """Train ``model`` in place on ``data``; batches are shuffled with ``generator``.

        ``grad_correction``, if given, is called after every backward pass and before the
        optimizer step: it edits the gradients in place (FedProx's proximal gradient,
        SCAFFOLD's control-variate correction). Without it a hop is plain local training.
        """


def weights_finite(model: torch.nn.Module) -> bool:
    """Whether every floating-point weight and buffer is finite (a diverged hop is not)."""
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values()
               if t.is_floating_point())
