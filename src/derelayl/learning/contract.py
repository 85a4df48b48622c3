"""The LightningModule contract of a hop: what the product calls, and what it does not.

A participant's hop is *defined* by a LightningModule (``derelayl.models.lit.ClassifierModule``
by default; ``model.module`` names another) but *run* by the product's own loop
(``derelayl.learning.hop.LightningHop``, or ``derelayl.learning.batched.BatchedHop`` for a whole
round at once), not by a ``pl.Trainer``. The loop calls exactly:

- ``configure_optimizers()``, once per hop: it must return one ``torch.optim.Optimizer``;
- ``training_step(batch, batch_idx)``, once per step, with ``batch = (x, y)``: it returns the
  batch's mean loss as a scalar tensor (or a dict whose ``"loss"`` is one);
- ``per_sample_loss(batch)``, if the module has it: each sample's loss (``training_step`` being
  their mean); batched execution uses it, else it evaluates ``training_step`` sample by sample;
- ``forward(x)`` (the logits) for evaluation.

Nothing else of Lightning's runs. A module that relies on more would be trained silently wrong,
so :func:`check_hop_module` refuses it, in one line, when the model is built: a list or dict of
optimizers or learning-rate schedulers, manual optimization (``automatic_optimization =
False``), and Lightning hooks the loop never calls (``on_*``, ``training_step_end``,
``on_before_backward`` ...). ``self.log`` / ``self.log_dict`` raise a clear error when called:
there is no Trainer to log to (the runner owns the metrics: it records each hop's loss).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeVar, cast

import torch

from derelayl.sim.errors import ConfigError

# Lightning hooks a Trainer would call around a step or an epoch; the hop calls none of them
_HOOK_PREFIXES = ("on_",)
_HOOKS = (
    "training_step_end",
    "training_epoch_end",
    "backward",
    "optimizer_step",
    "optimizer_zero_grad",
    "configure_gradient_clipping",
    "lr_scheduler_step",
    "validation_step",
    "configure_callbacks",
)


class HopModule(Protocol):
    """The calls the hop loop makes on a model module (see the module docstring)."""

    def configure_optimizers(self) -> Any: ...

    def training_step(self, batch: Any, batch_idx: int) -> Any: ...

    def per_sample_loss(self, batch: Any) -> Any: ...


def hop_calls(module: torch.nn.Module) -> HopModule:
    """``module`` as the hop loop calls it (typing only: ``check_hop_module`` refuses a module
    without ``configure_optimizers``/``training_step``; ``per_sample_loss`` is looked up first)."""
    return cast(HopModule, module)


def loss_of(out: Any) -> torch.Tensor:
    """The loss a ``training_step`` returned: a scalar tensor, or a dict's ``"loss"``."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping) and isinstance(out.get("loss"), torch.Tensor):
        return out["loss"]
    raise ConfigError(
        f"training_step must return the batch's loss (a scalar tensor, or a dict "
        f"with a 'loss' tensor); got {type(out).__name__}"
    )


def _lightning_base(cls: type) -> type | None:
    for base in cls.__mro__:
        if base.__name__ == "LightningModule" and base.__module__.split(".")[0] in (
            "pytorch_lightning",
            "lightning",
        ):
            return base
    return None


def _no_logging(name: str):
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ConfigError(
            f"self.{name}() is not supported in a hop's training_step: a hop runs "
            f"without a Lightning Trainer (return the loss; the runner records it)"
        )

    return refuse


M = TypeVar("M", bound=torch.nn.Module)


def check_hop_module(module: M) -> M:
    """Refuse what the hop loop would not honour (see the module docstring); return ``module``
    with ``log``/``log_dict`` made to fail loudly."""
    name = type(module).__name__
    for method in ("training_step", "configure_optimizers"):
        if not callable(getattr(module, method, None)):
            raise ConfigError(
                f"model module {name} has no {method}(): a hop module implements "
                f"training_step(batch, batch_idx) and configure_optimizers()"
            )
    if getattr(module, "automatic_optimization", True) is False:
        raise ConfigError(
            f"model module {name} uses manual optimization "
            f"(automatic_optimization=False), which the hop loop does not run"
        )
    base = _lightning_base(type(module))
    if base is not None:
        overridden = sorted(
            attr
            for attr in dir(type(module))
            if (attr.startswith(_HOOK_PREFIXES) or attr in _HOOKS)
            and callable(getattr(base, attr, None))
            and getattr(type(module), attr) is not getattr(base, attr)
        )
        if overridden:
            raise ConfigError(
                f"model module {name} overrides {', '.join(overridden)}: the hop "
                f"loop calls only configure_optimizers and training_step (no "
                f"Trainer runs its hooks)"
            )
        for method in ("log", "log_dict"):
            object.__setattr__(module, method, _no_logging(method))
    optimizer = hop_calls(module).configure_optimizers()
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(
            f"model module {name}: configure_optimizers() must return one "
            f"torch.optim.Optimizer (got {type(optimizer).__name__}; the hop loop "
            f"runs no learning-rate schedulers and no second optimizer)"
        )
    return module
