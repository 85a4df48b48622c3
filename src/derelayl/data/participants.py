"""Participants' private data, cut from the training split by a partition."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from derelayl.data.partition import Partition
from derelayl.sim.seeding import torch_generator


@dataclass(frozen=True)
class ParticipantData:
    pid: int
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


def build_participants(
    x: torch.Tensor, y: torch.Tensor, partition: Partition, seed: int
) -> list[ParticipantData]:
    """Slice the training tensors; feature-noise skew is added once, from the seed."""
    import torch

    out = []
    for pid, idx in enumerate(partition.indices):
        index = torch.as_tensor(idx, dtype=torch.long)
        xi = x[index]
        if partition.noise_std is not None and partition.noise_std[pid] > 0:
            gen = torch_generator(seed, "feature_noise", pid)
            noise = torch.randn(xi.shape, generator=gen, dtype=xi.dtype)
            xi = xi + partition.noise_std[pid] * noise
        out.append(ParticipantData(pid, xi.contiguous(), y[index].contiguous()))
    return out
