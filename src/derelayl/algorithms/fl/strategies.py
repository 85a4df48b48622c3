"""Federated strategies: what a client adds to its local steps, and what the server does with
what comes back (``aggregate``, as Flower's ``Strategy.aggregate_fit``).

- FedAvg (McMahan et al., AISTATS 2017): the sample-weighted mean of the clients' models; with
  ``server_lr`` != 1, ``x + server_lr (mean - x)``; ``aggregator`` swaps the mean for a robust
  rule (coordinate-wise median, trimmed mean, Krum: ``derelayl.algorithms.fl.aggregators``).
- FedProx (Li et al., MLSys 2020): local objective + (mu/2)||w - w_global||^2, applied as its
  gradient ``mu (w - w_global)``; ``mu = 0`` is FedAvg.
- SCAFFOLD (Karimireddy et al., ICML 2020): control variates c (server) and c_i (clients), all
  zero at the start; local gradients become ``g - c_i + c``; option II update
  ``c_i+ = c_i - c + (x - y_i) / (K lr)`` (K local steps), ``c += sum_i (c_i+ - c_i) / N``.
- FedNova (Wang et al., NeurIPS 2020): normalised averaging. Client i ran tau_i local steps of
  SGD with momentum rho; its update is normalised by a_i = (tau_i - rho (1 - rho^tau_i) /
  (1 - rho)) / (1 - rho) (= tau_i without momentum): d_i = (x - y_i) / a_i, and the server steps
  ``x - server_lr tau_eff sum_i p_i d_i`` with tau_eff = sum_i p_i a_i, so clients that ran
  more steps do not drag the model towards their own optimum.
- FedAdam (Reddi et al., ICLR 2021, "Adaptive Federated Optimization"): the weighted mean update
  Delta = sum_i p_i (y_i - x) is a pseudo-gradient for an Adam step on the server:
  m = b1 m + (1 - b1) Delta, v = b2 v + (1 - b2) Delta^2, x += server_lr m / (sqrt(v) + tau).

Every strategy sees a client's returned tensors in the model's ``state_dict`` order
(:class:`ClientUpdate`); parameters are the trainable ones among them (``params`` lists).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from derelayl.algorithms.fl.aggregators import AGGREGATORS, aggregate
from derelayl.learning.hop import HopStats
from derelayl.sim.errors import ConfigError

BatchedCorrection = Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], None]


@dataclass
class ClientUpdate:
    """What a client sent back: its tensors (``state_dict`` order), its share of the round's
    sample weight, and the local steps it took (0: it did not train: a free-rider's or a noise
    adversary's model)."""

    pid: int
    state: list[torch.Tensor]
    weight: float
    steps: int = 0


def _finite_positive(key: str, value: float) -> float:
    if not value > 0:
        raise ConfigError(f"algorithm.{key} must be > 0 (got {value})")
    return float(value)


class FedAvg:
    """No local correction; the server takes the (robust) mean and keeps nothing else."""

    name = "fedavg"

    def __init__(
        self,
        server_lr: float = 1.0,
        aggregator: str = "mean",
        trim_fraction: float = 0.1,
        krum_f: int = 1,
    ):
        self.server_lr = _finite_positive("server_lr", server_lr)
        if aggregator not in AGGREGATORS:
            raise ConfigError(
                f"unknown algorithm.aggregator {aggregator!r}; allowed: {', '.join(AGGREGATORS)}"
            )
        if not 0 <= trim_fraction < 0.5:
            raise ConfigError(f"algorithm.trim_fraction must be in [0, 0.5) (got {trim_fraction})")
        if krum_f < 0:
            raise ConfigError(f"algorithm.krum_f must be >= 0 (got {krum_f})")
        self.aggregator, self.trim_fraction, self.krum_f = aggregator, trim_fraction, int(krum_f)
        self.param_mask: list[bool] = []

    # -- the run -----------------------------------------------------------------------------------
    def start(
        self, params: Sequence[torch.Tensor], num_participants: int, param_mask: Sequence[bool] = ()
    ) -> None:
        """Before the first round: the global parameters, and which of the state's tensors are
        trainable parameters (``param_mask``, in ``state_dict`` order)."""
        self.param_mask = list(param_mask)

    # -- client side -------------------------------------------------------------------------------
    def correction(
        self, pid: int, params: Sequence[torch.nn.Parameter], global_params: Sequence[torch.Tensor]
    ) -> Callable[[], None] | None:
        """Edits a client's gradients after each backward pass (None: plain local SGD)."""
        return None

    def batched_correction(
        self, pids: Sequence[int], global_params: Sequence[torch.Tensor]
    ) -> BatchedCorrection | None:
        """The same correction for a round's clients trained at once (stacked tensors)."""
        return None

    def client_done(
        self,
        pid: int,
        params: Sequence[torch.Tensor],
        global_params: Sequence[torch.Tensor],
        stats: HopStats,
    ) -> None:
        """After client ``pid`` trained (its ``params``): client-side state (SCAFFOLD's c_i)."""

    # -- server side -------------------------------------------------------------------------------
    def combine(
        self, updates: Sequence[ClientUpdate], global_state: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        """The clients' models combined (weighted mean, or the robust rule)."""
        return aggregate(
            self.aggregator,
            [u.state for u in updates],
            [u.weight for u in updates],
            global_state,
            trim_fraction=self.trim_fraction,
            krum_f=self.krum_f,
        )

    def aggregate(
        self,
        global_state: list[torch.Tensor],
        updates: Sequence[ClientUpdate],
        dropped_weight: float = 0.0,
    ) -> None:
        """The new global model, in place. ``dropped_weight`` is the weight of clients whose
        model was discarded (it diverged): the mean is renormalised over those kept."""
        if not updates:
            return
        combined = self.combine(updates, global_state)
        kept = sum(u.weight for u in updates)
        with torch.no_grad():
            if self.aggregator == "mean" and dropped_weight > 0 and kept > 0:
                for m in combined:
                    if m.is_floating_point():
                        m.div_(kept)
            for g, m in zip(global_state, combined):
                if not g.is_floating_point():
                    continue
                if self.server_lr == 1.0:
                    g.copy_(m)  # exactly the combined model
                else:
                    g.add_(m - g, alpha=self.server_lr)

    def round_done(self) -> None:
        """After the round's aggregation (SCAFFOLD updates c)."""

    def extra_bytes(self, param_bytes: int) -> int:
        """Bytes a selected client moves beyond the model down and up."""
        return 0

    def state_dict(self) -> dict:
        """What the server keeps between rounds (resume); nothing for FedAvg and FedProx."""
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class FedProx(FedAvg):
    name = "fedprox"

    def __init__(self, mu: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        if not mu >= 0:
            raise ConfigError(f"algorithm.mu must be >= 0 (got {mu})")
        self.mu = float(mu)

    def correction(self, pid, params, global_params):
        mu = self.mu

        def proximal_gradient() -> None:
            # d/dw (mu/2)||w - w_global||^2 = mu (w - w_global)
            with torch.no_grad():
                for p, anchor in zip(params, global_params):
                    if p.grad is not None:
                        p.grad.add_(p - anchor, alpha=mu)

        return proximal_gradient

    def batched_correction(self, pids, global_params):
        mu = self.mu

        def proximal_gradient(params, grads) -> None:
            with torch.no_grad():
                for p, g, anchor in zip(params, grads, global_params):
                    g.add_(p - anchor, alpha=mu)

        return proximal_gradient


class Scaffold(FedAvg):
    """SCAFFOLD with option II control variates; ``local_lr`` is the clients' SGD step."""

    name = "scaffold"

    def __init__(self, local_lr: float, **kwargs):
        super().__init__(**kwargs)
        if not local_lr > 0:
            raise ConfigError(f"algorithm.optimizer.lr must be > 0 (got {local_lr})")
        self.local_lr = float(local_lr)
        self.c: list[torch.Tensor] = []
        self.c_clients: dict[int, list[torch.Tensor]] = {}
        self._delta_sum: list[torch.Tensor] = []
        self._num_participants = 0

    def start(self, params, num_participants, param_mask=()):
        super().start(params, num_participants, param_mask)
        self.c = [torch.zeros_like(p) for p in params]
        self.c_clients = {i: [torch.zeros_like(p) for p in params] for i in range(num_participants)}
        self._delta_sum = [torch.zeros_like(p) for p in params]
        self._num_participants = num_participants

    def _shift(self, pid: int) -> list[torch.Tensor]:
        return [c - ci for c, ci in zip(self.c, self.c_clients[pid])]  # g - c_i + c

    def correction(self, pid, params, global_params):
        shift = self._shift(pid)

        def control_variate_correction() -> None:
            with torch.no_grad():
                for p, s in zip(params, shift):
                    if p.grad is not None:
                        p.grad.add_(s)

        return control_variate_correction

    def batched_correction(self, pids, global_params):
        shifts = [self._shift(pid) for pid in pids]
        stacked = [torch.stack([s[j] for s in shifts]) for j in range(len(self.c))]

        def control_variate_correction(params, grads) -> None:
            with torch.no_grad():
                for g, s in zip(grads, stacked):
                    g.add_(s.to(g.device))

        return control_variate_correction

    def client_done(self, pid, params, global_params, stats):
        scale = 1.0 / (max(stats.steps, 1) * self.local_lr)
        old = self.c_clients[pid]
        new = [
            ci - c + (x - y.detach()) * scale
            for ci, c, x, y in zip(old, self.c, global_params, params)
        ]
        for acc, n, o in zip(self._delta_sum, new, old):
            acc.add_(n - o)
        self.c_clients[pid] = new

    def round_done(self):
        for c, d in zip(self.c, self._delta_sum):
            c.add_(d / self._num_participants)
            d.zero_()

    def extra_bytes(self, param_bytes):
        return 2 * param_bytes  # c down, delta c_i up

    def state_dict(self):
        return {
            "c": [t.clone() for t in self.c],
            "c_clients": [
                [t.clone() for t in self.c_clients[i]] for i in range(self._num_participants)
            ],
        }

    def load_state_dict(self, state):
        with torch.no_grad():
            for t, saved in zip(self.c, state["c"]):
                t.copy_(saved)
        self.c_clients = {i: [t.clone() for t in row] for i, row in enumerate(state["c_clients"])}


class FedNova(FedAvg):
    """Normalised averaging; ``momentum`` is the clients' SGD momentum (rho)."""

    name = "fednova"

    def __init__(self, momentum: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= momentum < 1:
            raise ConfigError(
                f"algorithm.optimizer.momentum must be in [0, 1) for fednova (got {momentum})"
            )
        if self.aggregator != "mean":
            raise ConfigError("fednova normalises the weighted mean: algorithm.aggregator=mean")
        self.momentum = float(momentum)

    def norm(self, steps: int) -> float:
        """a_i: the sum of the momentum-accumulated gradient coefficients over tau_i steps."""
        rho = self.momentum
        if rho == 0:
            return float(steps)
        return (steps - rho * (1 - rho**steps) / (1 - rho)) / (1 - rho)

    def aggregate(self, global_state, updates, dropped_weight=0.0):
        if not updates:
            return
        kept = sum(u.weight for u in updates)
        p = [u.weight / kept for u in updates]
        # a model that was not trained (a free-rider's, a noise adversary's) counts as one step
        a = [self.norm(u.steps) if u.steps > 0 else 1.0 for u in updates]
        tau_eff = sum(pi * ai for pi, ai in zip(p, a))
        with torch.no_grad():
            for j, g in enumerate(global_state):
                if not g.is_floating_point():
                    continue
                direction = torch.zeros_like(g)
                for u, pi, ai in zip(updates, p, a):
                    direction.add_(g - u.state[j], alpha=pi / ai)  # p_i d_i
                g.sub_(direction, alpha=self.server_lr * tau_eff)


class FedAdam(FedAvg):
    """Adam on the server over the clients' weighted mean update (Reddi et al. 2021)."""

    name = "fedadam"

    def __init__(
        self,
        server_lr: float = 0.1,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        **kwargs,
    ):
        super().__init__(server_lr=server_lr, **kwargs)
        for key, value in (("beta1", beta1), ("beta2", beta2)):
            if not 0 <= value < 1:
                raise ConfigError(f"algorithm.{key} must be in [0, 1) (got {value})")
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.tau = _finite_positive("tau", tau)
        # first and second moments per state entry (None: not floating point)
        self.m: list[torch.Tensor | None] = []
        self.v: list[torch.Tensor | None] = []

    def start(self, params, num_participants, param_mask=()):
        super().start(params, num_participants, param_mask)
        self.m, self.v = [], []

    def aggregate(self, global_state, updates, dropped_weight=0.0):
        if not updates:
            return
        mean = self.combine(updates, global_state)
        kept = sum(u.weight for u in updates) if self.aggregator == "mean" else 1.0
        if not self.m:
            self.m = [torch.zeros_like(g) if g.is_floating_point() else None for g in global_state]
            self.v = [torch.zeros_like(g) if g.is_floating_point() else None for g in global_state]
        with torch.no_grad():
            for g, mu, m, v in zip(global_state, mean, self.m, self.v):
                if not g.is_floating_point():
                    continue
                assert m is not None and v is not None  # every floating-point entry has both
                delta = mu / kept - g  # pseudo-gradient: the mean update
                m.mul_(self.beta1).add_(delta, alpha=1 - self.beta1)
                v.mul_(self.beta2).addcmul_(delta, delta, value=1 - self.beta2)
                g.add_(self.server_lr * m / (v.sqrt() + self.tau))

    def state_dict(self):
        return {
            "m": [t.clone() for t in self.m if t is not None],
            "v": [t.clone() for t in self.v if t is not None],
            "mask": [t is not None for t in self.m],
        }

    def load_state_dict(self, state):
        if not state.get("mask"):
            return
        m, v = iter(state["m"]), iter(state["v"])
        self.m = [next(m).clone() if on else None for on in state["mask"]]
        self.v = [next(v).clone() if on else None for on in state["mask"]]


STRATEGIES = {c.name: c for c in (FedAvg, FedProx, Scaffold, FedNova, FedAdam)}
