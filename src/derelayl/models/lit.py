"""The LightningModule that defines what one training hop optimises."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


class ClassifierModule(pl.LightningModule):
    """Cross-entropy classification of ``net``; the optimizer comes from the config (partial)."""

    def __init__(self, net: torch.nn.Module, optimizer: OptimizerFactory):
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def per_sample_loss(self, batch):
        """The loss of each sample of the batch (``training_step`` is their mean): lets a round's
        hops run as one batched computation without evaluating samples one by one."""
        x, y = batch
        return F.cross_entropy(self.net(x), y, reduction="none")

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())
