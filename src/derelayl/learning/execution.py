"""Where and how a run's hops execute: ``device=auto|cpu|cuda`` and
``algorithm.execution=auto|sequential|batched``.

- ``device``: ``auto`` takes a GPU when torch sees one, else the CPU. Data, models and
  evaluation live on that device. On the CPU a run is bit-identical for a fixed
  ``torch_threads``.
- ``execution``: ``sequential`` trains a round's hops one after another (``LightningHop``);
  ``batched`` trains them as one computation (``BatchedHop``: same batches, same optimizer steps,
  same corrections; weights agree to float32 rounding); ``auto`` batches where it pays: always on
  a GPU, and on the CPU for models without convolutions (measured: an MLP round of 64 hops gains
  several times, a CNN's convolutions are already compute-bound on a CPU and gain nothing). A
  module that cannot be batched (buffers, dropout, a non-element-wise optimizer) runs
  sequentially under ``auto`` and is refused under ``batched``.
"""

from __future__ import annotations

import torch
from torch import nn

from derelayl.learning.batched import BatchedHop, batchable, has_convolutions
from derelayl.learning.contract import hop_calls
from derelayl.sim.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
EXECUTIONS = ("auto", "sequential", "batched")


def resolve_device(name: str) -> torch.device:
    """``auto``: a GPU when torch has one, else the CPU; ``cuda`` refuses a machine without."""
    if name not in DEVICES and not str(name).startswith("cuda:"):
        raise ConfigError(f"unknown device {name!r}; allowed: {', '.join(DEVICES)} (or cuda:<i>)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device={name}: torch sees no GPU on this machine (use device=auto or device=cpu)"
        )
    return torch.device(name)


def batched_hop(
    execution: str,
    module: nn.Module,
    device: torch.device,
    batch_size: int,
    local_epochs: int,
    local_steps: int | None,
) -> BatchedHop | None:
    """The batched hop ``execution`` chooses for ``module`` on ``device`` (None: sequential)."""
    if execution not in EXECUTIONS:
        raise ConfigError(
            f"unknown algorithm.execution {execution!r}; allowed: {', '.join(EXECUTIONS)}"
        )
    if execution == "sequential":
        return None
    why = batchable(module, hop_calls(module).configure_optimizers())
    if why is not None:
        if execution == "batched":
            raise ConfigError(
                f"algorithm.execution=batched: {why}; use algorithm.execution=sequential (or auto)"
            )
        return None
    if execution == "auto" and device.type == "cpu" and has_convolutions(module):
        return None
    return BatchedHop(batch_size=batch_size, local_epochs=local_epochs, local_steps=local_steps)
