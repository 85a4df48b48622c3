"""One training hop: a participant fits the weights it received on its own data.

``HopTrainer`` is the interface every algorithm calls (relay, DeRelayL, FL clients, local,
centralized, Shapley replays); ``LightningHop`` is the product's hop: a lean loop that drives the
LightningModule's own ``training_step`` and ``configure_optimizers`` over pre-built tensor
batches (the contract it relies on: ``derelayl.learning.contract``).

Why not a ``pl.Trainer`` per hop: on these small per-participant datasets a Trainer costs several
times a plain loop (set-up per ``fit``, loggers, checkpoint dirs, restarted ``global_step``), and
a hop is called thousands of times per run. ``benchmarks/hop_overhead.py`` measures the choice.
A fresh optimizer is configured at every hop: the participant receives weights, not the previous
holder's optimizer state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from derelayl.data.participants import ParticipantData
from derelayl.learning.contract import hop_calls, loss_of
from derelayl.sim.errors import ConfigError


@dataclass(frozen=True)
class HopStats:
    samples: int  # sample passes (samples x epochs, or steps x batch)
    steps: int  # optimizer steps
    train_loss: float  # mean training loss over the hop's steps


class HopTrainer(Protocol):
    def __call__(
        self,
        model: torch.nn.Module,
        data: ParticipantData,
        generator: torch.Generator,
        grad_correction: Callable[[], None] | None = None,
    ) -> HopStats:
        """Train ``model`` in place on ``data``; batches are shuffled with ``generator``.

        ``grad_correction``, if given, is called after every backward pass and before the
        optimizer step: it edits the gradients in place (FedProx's proximal gradient,
        SCAFFOLD's control-variate correction). Without it a hop is plain local training.
        """


def weights_finite(model: torch.nn.Module) -> bool:
    """Whether every floating-point weight and buffer is finite (a diverged hop is not)."""
    return all(
        bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point()
    )


class LightningHop:
    """Fit for ``local_epochs`` passes, or exactly ``local_steps`` optimizer steps if set."""

    def __init__(self, batch_size: int = 32, local_epochs: int = 1, local_steps: int | None = None):
        if batch_size < 1:
            raise ConfigError(f"algorithm.batch_size must be >= 1 (got {batch_size})")
        if local_steps is None and local_epochs < 1:
            raise ConfigError(f"algorithm.local_epochs must be >= 1 (got {local_epochs})")
        if local_steps is not None and local_steps < 1:
            raise ConfigError(f"algorithm.local_steps must be >= 1 or null (got {local_steps})")
        self.batch_size = int(batch_size)
        self.local_epochs = int(local_epochs)
        self.local_steps = None if local_steps is None else int(local_steps)

    def __call__(
        self,
        model: torch.nn.Module,
        data: ParticipantData,
        generator: torch.Generator,
        grad_correction: Callable[[], None] | None = None,
    ) -> HopStats:
        model.train()
        calls = hop_calls(model)
        optimizer = calls.configure_optimizers()
        n, bs = len(data), self.batch_size
        budget = self.local_steps
        steps, samples = 0, 0
        loss_sum = torch.zeros(())
        epoch = 0
        while True:
            if budget is None and epoch == self.local_epochs:
                break
            perm = torch.randperm(n, generator=generator)
            for start in range(0, n, bs):
                idx = perm[start : start + bs]
                loss = loss_of(calls.training_step((data.x[idx], data.y[idx]), steps))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if grad_correction is not None:  # FedProx / SCAFFOLD (see HopTrainer)
                    grad_correction()
                optimizer.step()
                steps += 1
                samples += len(idx)
                loss_sum += loss.detach()
                if budget is not None and steps == budget:
                    return HopStats(
                        samples=samples, steps=steps, train_loss=float(loss_sum) / steps
                    )
            epoch += 1
        return HopStats(samples=samples, steps=steps, train_loss=float(loss_sum) / max(steps, 1))
