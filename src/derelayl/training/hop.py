"""The product's hop: a lean loop that drives the LightningModule's own ``training_step`` and
``configure_optimizers`` over pre-built tensor batches.

Why not a ``pl.Trainer`` per hop: on these small per-participant datasets a Trainer costs several
times a plain loop (set-up per ``fit``, loggers, checkpoint dirs, restarted ``global_step``), and
a hop is called thousands of times per run. ``benchmarks/hop_overhead.py`` measures the choice.
A fresh optimizer is configured at every hop: the participant receives weights, not the previous
holder's optimizer state.
"""

from __future__ import annotations

from typing import Callable

import pytorch_lightning as pl
import torch

from derelayl.core.errors import ConfigError
from derelayl.core.hop import HopStats
from derelayl.core.participants import ParticipantData


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

    def __call__(self, model: pl.LightningModule, data: ParticipantData,
                 generator: torch.Generator,
                 grad_correction: Callable[[], None] | None = None) -> HopStats:
        model.train()
        optimizer = model.configure_optimizers()
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
                idx = perm[start:start + bs]
                loss = model.training_step((data.x[idx], data.y[idx]), steps)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if grad_correction is not None:  # FedProx / SCAFFOLD (see core.hop.HopTrainer)
                    grad_correction()
                optimizer.step()
                steps += 1
                samples += len(idx)
                loss_sum += loss.detach()
                if budget is not None and steps == budget:
                    return HopStats(samples=samples, steps=steps, train_loss=float(loss_sum) / steps)
            epoch += 1
        return HopStats(samples=samples, steps=steps, train_loss=float(loss_sum) / max(steps, 1))
