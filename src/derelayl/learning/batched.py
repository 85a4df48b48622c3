"""A round's hops as one batched computation (``torch.func``): K models, K datasets, one loop.

The hops of a round are independent: every DeRelayL trainer trains its own copy of its owner's
model, every FL client its own copy of the global model. Run one after another, each step of each
hop is a handful of small kernels and the Python loop dominates; stacked along a leading model
dimension and vectorised with ``vmap``, a step of all K hops is the same handful of kernels.

The maths is the sequential hop's (``LightningHop``), model by model:

- *Same batches*: model k draws its epochs' permutations from its own generator in the same order
  as the sequential loop, so it sees the same batches in the same order (the last, short batch of
  an epoch included).
- *Same loss*: the LightningModule's own ``training_step`` is evaluated per sample (a batch of one,
  under ``vmap``) and averaged over the model's real samples: padding (models with fewer or shorter
  batches than the longest) is masked out, so the gradient is that of the mean loss over the real
  batch, as in the sequential step.
- *Same optimizer steps*: the optimizer that ``configure_optimizers`` returns is rebuilt with the
  same class and hyperparameters over the stacked parameters. Element-wise optimizers (SGD with
  momentum / weight decay / Nesterov, Adam, AdamW, RMSprop, Adagrad) then update every model's
  slice exactly as they would update the model alone. A model whose hop has fewer steps than the
  longest is snapshotted when its last step is done and restored at the end.
- *Same corrections*: FedProx's proximal gradient and SCAFFOLD's control variates are element-wise
  edits of the gradients and act on the stacked gradients in one call.

Agreement with the sequential hop is float32 rounding (summation order), not bitwise; tests check
it to 1e-4. What is not supported (a clear error, or ``execution=auto`` stays sequential): modules
with buffers (BatchNorm's running statistics), dropout (its random masks would not match the
sequential ones) and optimizers that are not element-wise or have several parameter groups.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from derelayl.learning.contract import hop_calls
from derelayl.learning.hop import HopStats
from derelayl.sim.errors import ConfigError

# optimizers whose update is element-wise: stacking the parameters changes nothing
ELEMENTWISE_OPTIMIZERS = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
)

BatchedCorrection = Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], None]


@dataclass(frozen=True)
class StackedData:
    """Every participant's training data in one tensor (rows of participant i:
    ``offsets[i]:offsets[i+1]``), on the device the hops run on."""

    x: torch.Tensor
    y: torch.Tensor
    offsets: torch.Tensor  # (N + 1,) int64, on the CPU

    @classmethod
    def of(cls, participants, device: torch.device | str = "cpu") -> StackedData:
        sizes = torch.tensor([len(p) for p in participants], dtype=torch.int64)
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), sizes.cumsum(0)])
        x = torch.cat([p.x for p in participants]).to(device)
        y = torch.cat([p.y for p in participants]).to(device)
        return cls(x, y, offsets)

    def size(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])


def batchable(module: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> str | None:
    """Why ``module`` cannot be trained batched (None: it can)."""
    if any(True for _ in module.buffers()):
        return "the model has buffers (e.g. BatchNorm running statistics)"
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in module.modules()):
        return "the model uses dropout (its random masks would differ from a sequential hop's)"
    if optimizer is not None:
        if not isinstance(optimizer, ELEMENTWISE_OPTIMIZERS):
            return f"{type(optimizer).__name__} is not an element-wise optimizer"
        if len(optimizer.param_groups) != 1:
            return "configure_optimizers returned several parameter groups"
    return None


def stack_states(
    states: Sequence[dict[str, torch.Tensor]], names: Sequence[str], device: torch.device | str
) -> list[torch.Tensor]:
    """``[K x ...]`` tensors, one per parameter name, from K state dicts."""
    return [torch.stack([s[n] for s in states]).to(device) for n in names]


def unstack_state(
    stacked: Sequence[torch.Tensor], names: Sequence[str], k: int
) -> dict[str, torch.Tensor]:
    return {n: t[k].detach().to("cpu", copy=True) for n, t in zip(names, stacked)}


class _LossAsForward(nn.Module):
    """``forward(x, y)``: the module's per-sample losses of the batch (``per_sample_loss``), or its
    ``training_step`` on a batch of one: lets ``functional_call`` evaluate the LightningModule's
    own loss with swapped-in parameters."""

    def __init__(self, module: nn.Module, per_sample: bool):
        super().__init__()
        self.module = module
        self.per_sample = per_sample

    def forward(self, x, y):
        if self.per_sample:
            return hop_calls(self.module).per_sample_loss((x, y))
        return hop_calls(self.module).training_step((x, y), 0)


class BatchedHop:
    """Trains K models at once, each as ``LightningHop(batch_size, local_epochs, local_steps)``
    would train it alone on its participant's data with its generator."""

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

    # -- the batches ---------------------------------------------------------------------------
    def batches(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """The sequential hop's batches, in order, as rows of a (steps, batch_size) index tensor
        into the participant's data (-1 pads an epoch's last, short batch)."""
        bs = self.batch_size
        per_epoch = -(-n // bs)
        if n == 0:
            return torch.zeros((0, bs), dtype=torch.int64)
        epochs = (
            self.local_epochs if self.local_steps is None else -(-self.local_steps // per_epoch)
        )
        pad = per_epoch * bs - n
        rows = []
        for _ in range(epochs):  # one permutation per epoch, drawn as LightningHop draws it
            perm = torch.randperm(n, generator=generator)
            if pad:
                perm = torch.cat([perm, perm.new_full((pad,), -1)])
            rows.append(perm.view(per_epoch, bs))
        out = torch.cat(rows)
        return out if self.local_steps is None else out[: self.local_steps]

    def plan(
        self, data: StackedData, pids: Sequence[int], generators: Sequence[torch.Generator]
    ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Row indices into ``data`` (K, S, B), their mask (K, S, B) and each model's steps."""
        per_model = [self.batches(data.size(p), g) for p, g in zip(pids, generators)]
        steps = [len(b) for b in per_model]
        k, s, bs = len(pids), max(steps, default=0), self.batch_size
        local = torch.full((k, s, bs), -1, dtype=torch.int64)
        for i, b in enumerate(per_model):
            local[i, : len(b)] = b
        mask = local >= 0
        base = data.offsets[torch.as_tensor(list(pids), dtype=torch.int64)].view(k, 1, 1)
        index = torch.where(mask, local + base, torch.zeros_like(local))
        return index, mask, steps

    # -- training ------------------------------------------------------------------------------
    def __call__(
        self,
        module: nn.Module,
        stacked: list[torch.Tensor],
        data: StackedData,
        pids: Sequence[int],
        generators: Sequence[torch.Generator],
        correction: BatchedCorrection | None = None,
    ) -> list[HopStats]:
        """Train the K models whose parameters are ``stacked`` (in the order of
        ``module.named_parameters()``, K along dim 0) in place; model k on participant
        ``pids[k]``'s rows of ``data`` with ``generators[k]``."""
        index, mask, steps = self.plan(data, pids, generators)
        return self._train(module, stacked, data, index, mask, steps, correction)

    def same_data(
        self,
        module: nn.Module,
        stacked: list[torch.Tensor],
        data: StackedData,
        pid: int,
        generator: torch.Generator,
        correction: BatchedCorrection | None = None,
    ) -> list[HopStats]:
        """Train all K models on participant ``pid``'s batches drawn from one ``generator``:
        K replays of the same hop from different weights (Shapley's coalitions). The batches
        are gathered once and shared, instead of K times."""
        index, mask, steps = self.plan(data, [pid], [generator])
        k = stacked[0].shape[0]
        return self._train(module, stacked, data, index, mask, steps * k, correction, shared=k)

    def _train(self, module, stacked, data, index, mask, steps, correction, shared: int = 0):
        names = [n for n, _ in module.named_parameters()]
        optimizer = module.configure_optimizers()
        why = batchable(module, optimizer)
        if why is not None:
            raise ConfigError(
                f"algorithm.execution=batched: {why}; use algorithm.execution=sequential"
            )
        leaves = list(stacked)
        if any(t.requires_grad or not t.is_leaf for t in leaves):
            raise ValueError("BatchedHop trains plain stacked tensors (no autograd history)")
        device = leaves[0].device
        k, total = leaves[0].shape[0], index.shape[1]
        index, mask = index.to(device), mask.to(device)
        opt = type(optimizer)(leaves, **optimizer.defaults)
        per_sample = callable(getattr(module, "per_sample_loss", None))
        wrapper = _LossAsForward(module, per_sample)
        keys = [f"module.{n}" for n in names]

        def losses_of(params, x, y):
            if per_sample:  # the module's own per-sample losses of the batch
                return functional_call(wrapper, dict(zip(keys, params)), (x, y))
            # else its training_step (a batch mean) on batches of one sample each
            return vmap(
                lambda p, xi, yi: functional_call(
                    wrapper, dict(zip(keys, p)), (xi[None], yi[None])
                ),
                in_dims=(None, 0, 0),
            )(params, x, y)

        def model_loss(params, x, y, w):
            # w: 1 / (real samples) on the model's real samples, 0 on padding
            return (losses_of(params, x, y) * w).sum()

        data_dim = None if shared else 0
        step_fn = vmap(grad_and_value(model_loss), in_dims=(0, data_dim, data_dim, data_dim))
        counts = mask.sum(dim=2, keepdim=True)
        weights = mask / counts.clamp(min=1)
        active = (counts[..., 0] > 0).to(weights.dtype)  # (K or 1, S): the model takes step t
        loss_sum = torch.zeros(k, device=device)
        finished: dict[int, list[torch.Tensor]] = {}
        finishing: dict[int, list[int]] = {}
        for i, s in enumerate(steps):
            if 0 < s < total:
                finishing.setdefault(s, []).append(i)
        shape = data.x.shape[1:]
        rows_per_step = index.shape[0]
        for t in range(total):
            rows = index[:, t].reshape(-1)
            x = data.x.index_select(0, rows).view(rows_per_step, -1, *shape)
            y = data.y.index_select(0, rows).view(rows_per_step, -1)
            w = weights[:, t]
            if shared:
                x, y, w = x[0], y[0], w[0]
            grads, losses = step_fn(tuple(leaves), x, y, w)
            for p, g in zip(leaves, grads):
                p.grad = g
            if correction is not None:
                correction(leaves, grads)
            opt.step()
            loss_sum += losses.detach() * active[:, t]
            for i in finishing.get(t + 1, ()):
                finished[i] = [p[i].detach().clone() for p in leaves]
        with torch.no_grad():
            for i, saved in finished.items():
                for p, v in zip(leaves, saved):
                    p[i].copy_(v)
        for p in leaves:
            p.grad = None
        sizes = (
            counts.sum(dim=(1, 2)).expand(k).cpu().tolist()
            if shared
            else counts.sum(dim=(1, 2)).cpu().tolist()
        )
        losses = (loss_sum / torch.tensor(steps, device=device).clamp(min=1)).cpu().tolist()
        return [
            HopStats(samples=int(sizes[i]), steps=steps[i], train_loss=losses[i]) for i in range(k)
        ]


def has_convolutions(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


@torch.no_grad()
def evaluate_many(
    module: nn.Module,
    stacked: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 2048,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy and accuracy of each of K stacked models on (x, y): two (K,) float64
    tensors (accuracy exactly ``evaluate``'s; the loss to float32 rounding).

    One vmapped pass, except for models with convolutions on a CPU: those are scored one model
    after another (``functional_call`` on each model's slice, no copies). vmapped over K weight
    sets a convolution becomes a grouped one, and on a CPU that is several times slower than K
    plain passes (measured, K = 80 CNNs on 2,150 MNIST-1D samples: 8.0 s against 1.3 s; on 100
    samples 0.31 s against 0.11 s), the same finding as ``execution=auto``'s for training."""
    names = [n for n, _ in module.named_parameters()]
    k = stacked[0].shape[0]
    device = stacked[0].device
    loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
    correct = torch.zeros(k, dtype=torch.int64, device=device)
    was_training = module.training
    module.eval()
    if device.type == "cpu" and has_convolutions(module):
        for i in range(k):
            params = {n: t[i] for n, t in zip(names, stacked)}
            for start in range(0, len(y), batch_size):
                xb, yb = x[start : start + batch_size], y[start : start + batch_size]
                logits = functional_call(module, params, (xb,))
                loss_sum[i] += torch.nn.functional.cross_entropy(logits, yb, reduction="sum")
                correct[i] += (logits.argmax(dim=1) == yb).sum()
    else:

        def logits_of(params, xb):
            return functional_call(module, dict(zip(names, params)), (xb,))

        batched = vmap(logits_of, in_dims=(0, None))
        for start in range(0, len(y), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            logits = batched(tuple(stacked), xb)  # (K, b, C)
            ce = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), yb.expand(k, -1), reduction="none"
            )
            loss_sum += ce.sum(dim=1)
            correct += (logits.argmax(dim=2) == yb).sum(dim=1)
    module.train(was_training)
    n = max(len(y), 1)
    return loss_sum / n, correct.to(torch.float64) / n
