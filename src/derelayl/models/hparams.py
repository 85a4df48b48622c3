"""The networks' hyperparameters and their defaults, in one place and without torch: a config is
checked against them before torch loads; :mod:`derelayl.models.nets` builds the networks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MLPParams:
    """``model=mlp``: hidden layer widths, and dropout after each (0: none)."""

    hidden: tuple[int, ...] = (128,)
    dropout: float = 0.0


@dataclass(frozen=True)
class CNNParams:
    """``model=cnn``: channels of the conv blocks, width of the linear head, kernel size."""

    channels: tuple[int, ...] = (16, 32)
    hidden: int = 64
    kernel_size: int = 3
