"""Small networks sized for CPU. Each takes the dataset's ``input_shape`` and ``num_classes``;
their hyperparameters' defaults are in :mod:`derelayl.models.hparams`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from derelayl.models.hparams import CNNParams, MLPParams
from derelayl.sim.errors import ConfigError


class MLP(nn.Module):
    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = MLPParams.hidden,
        dropout: float = MLPParams.dropout,
    ):
        super().__init__()
        if any(h < 1 for h in hidden):
            raise ConfigError(f"model.net.hidden sizes must be >= 1 (got {list(hidden)})")
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class CNN(nn.Module):
    """Two conv blocks and a linear head; 1-D convs for (C, L) inputs, 2-D for (C, H, W)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = CNNParams.channels,
        hidden: int = CNNParams.hidden,
        kernel_size: int = CNNParams.kernel_size,
    ):
        super().__init__()
        if len(input_shape) not in (2, 3):
            raise ConfigError(
                f"model=cnn needs inputs shaped (C, L) or (C, H, W), got {tuple(input_shape)}"
            )
        conv = nn.Conv1d if len(input_shape) == 2 else nn.Conv2d
        pool = nn.MaxPool1d if len(input_shape) == 2 else nn.MaxPool2d
        layers: list[nn.Module] = []
        in_ch = input_shape[0]
        spatial = list(input_shape[1:])
        for ch in channels:
            layers += [conv(in_ch, ch, kernel_size, padding=kernel_size // 2), nn.ReLU()]
            if min(spatial) >= 2:
                layers.append(pool(2))
                spatial = [s // 2 for s in spatial]
            in_ch = ch
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_ch * math.prod(spatial), hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
