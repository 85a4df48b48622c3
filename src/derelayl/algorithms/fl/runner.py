"""Federated baselines: FedAvg, FedProx and SCAFFOLD on the same hop as the relay.

A round: the server picks ``clients_per_round`` participants (seeded stream ``clients/<round>``),
each trains a copy of the global model with the product's hop (stream ``hop/<round>/<pid>``,
the relay's stream, so one client with full participation *is* plain local training), and the
server aggregates. Strategies differ only in the gradient correction during local training and
in what the server does with the results:

- FedAvg (McMahan et al., AISTATS 2017): the new global model is the mean of the clients'
  weights, weighted by sample count; with ``server_lr`` != 1, ``x + server_lr * (mean - x)``.
- FedProx (Li et al., MLSys 2020): local objective + (mu/2)||w - w_global||^2, applied as its
  gradient ``mu (w - w_global)``; ``mu = 0`` is FedAvg.
- SCAFFOLD (Karimireddy et al., ICML 2020): control variates c (server) and c_i (clients), all
  zero at the start; local gradients become ``g - c_i + c``; option II update
  ``c_i+ = c_i - c + (x - y_i) / (K lr)`` (K local steps), ``c += sum_i (c_i+ - c_i) / N``.

Costs: every selected client downloads and uploads the model (SCAFFOLD: also c down and its
control-variate delta up); a round waits for its slowest selected client.

Populations (``FederatedPopulation``, off by default: everybody honest and always there), with
the keys and meanings of DeRelayL's economy (``core.population``): a ``dropout`` client downloads
the model and returns nothing (left out of the aggregate); a ``free_rider`` returns the global
model unchanged, aggregated with its declared sample weight (it dilutes the update) but, as in
DeRelayL, never paid (an unchanged model is never eligible); a ``noise`` client returns the
global weights plus N(0, noise_std^2) (stream ``noise/<round>/<pid>``); ``label_flip`` and
``sybil`` clients train honestly on the data they were given (``adversarial_data``). With
economics, incentive payouts are settled every round and each participant's utility is
coins received + model value x the gain in quality (validation accuracy) of the best global
model it downloaded - samples trained x cost per sample - transfers x cost per transfer; with
churn on, that utility decides who leaves and how many join (``churn_step``, stream
``churn/<round>``), and clients are selected among the active participants only.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from derelayl.sim.errors import ConfigError
from derelayl.learning.evaluation import EvalSet, evaluate
from derelayl.sim.events import Observer, Observers, RoundRecord
from derelayl.learning.hop import HopStats, HopTrainer, weights_finite
from derelayl.protocol.incentives import FederatedPayouts
from derelayl.data.participants import ParticipantData
from derelayl.protocol.population import (DROPOUT, FREE_RIDER, HONEST, NOISE, ChurnParams, Economics,
                                      book_utility, churn_step, population_metrics)
from derelayl.sim.devices import Devices, model_bytes, parameter_bytes
from derelayl.sim.seeding import numpy_rng, torch_generator


# -- strategies -------------------------------------------------------------------------------
class FedAvg:
    """No local correction; the server keeps nothing but the model."""

    name = "fedavg"

    def start(self, params: Sequence[torch.Tensor], num_participants: int) -> None: ...

    def correction(self, pid: int, params: Sequence[torch.nn.Parameter],
                   global_params: Sequence[torch.Tensor]) -> Callable[[], None] | None:
        return None

    def client_done(self, pid: int, params: Sequence[torch.Tensor],
                    global_params: Sequence[torch.Tensor], stats: HopStats) -> None: ...

    def round_done(self) -> None: ...

    def extra_bytes(self, param_bytes: int) -> int:
        """Bytes a selected client moves beyond the model down and up."""
        return 0

    def state_dict(self) -> dict:
        """What the server keeps between rounds (resume); nothing for FedAvg and FedProx."""
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class FedProx(FedAvg):
    name = "fedprox"

    def __init__(self, mu: float = 0.01):
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


class Scaffold(FedAvg):
    """SCAFFOLD with option II control variates; ``local_lr`` is the clients' SGD step."""

    name = "scaffold"

    def __init__(self, local_lr: float):
        if not local_lr > 0:
            raise ConfigError(f"algorithm.optimizer.lr must be > 0 (got {local_lr})")
        self.local_lr = float(local_lr)
        self.c: list[torch.Tensor] = []
        self.c_clients: dict[int, list[torch.Tensor]] = {}
        self._delta_sum: list[torch.Tensor] = []
        self._num_participants = 0

    def start(self, params, num_participants):
        self.c = [torch.zeros_like(p) for p in params]
        self.c_clients = {i: [torch.zeros_like(p) for p in params] for i in range(num_participants)}
        self._delta_sum = [torch.zeros_like(p) for p in params]
        self._num_participants = num_participants

    def correction(self, pid, params, global_params):
        shift = [c - ci for c, ci in zip(self.c, self.c_clients[pid])]  # g - c_i + c

        def control_variate_correction() -> None:
            with torch.no_grad():
                for p, s in zip(params, shift):
                    if p.grad is not None:
                        p.grad.add_(s)

        return control_variate_correction

    def client_done(self, pid, params, global_params, stats):
        scale = 1.0 / (max(stats.steps, 1) * self.local_lr)
        old = self.c_clients[pid]
        new = [ci - c + (x - y.detach()) * scale
               for ci, c, x, y in zip(old, self.c, global_params, params)]
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
        return {"c": [t.clone() for t in self.c],
                "c_clients": [[t.clone() for t in self.c_clients[i]]
                              for i in range(self._num_participants)]}

    def load_state_dict(self, state):
        with torch.no_grad():
            for t, saved in zip(self.c, state["c"]):
                t.copy_(saved)
        self.c_clients = {i: [t.clone() for t in row] for i, row in enumerate(state["c_clients"])}


# -- the runner -------------------------------------------------------------------------------
@dataclass(frozen=True)
class FederatedPopulation:
    """Who an FL run's clients are: behaviour codes per identity (``core.population``), and
    optionally their economics and churn. Identities ``[0, initial_active)`` (default: all)
    are active at the start, the rest wait in the join pool."""

    behaviour: np.ndarray
    economics: Economics | None = None
    churn: ChurnParams | None = None
    initial_active: int | None = None
    noise_std: float = 1.0

    def __post_init__(self):
        if self.churn is not None and self.churn.enabled and self.economics is None:
            raise ConfigError("FL churn needs the participants' economics (utility drives it)")


@dataclass(frozen=True)
class PopulationOutcome:
    """The population at the end of an FL run (arrays over identities)."""

    behaviour: np.ndarray
    active: np.ndarray
    ever_active: np.ndarray
    utility: np.ndarray  # cumulative: the satisfaction index
    matches: np.ndarray  # rounds each identity was selected in
    initial_active: int


@dataclass(frozen=True)
class RoundsResult:
    """What a round-based run (FL, local, centralized) returns."""

    model: torch.nn.Module | None
    history: tuple[RoundRecord, ...]
    rounds: int
    hops: int  # local trainings (client updates)
    samples_seen: int
    bytes: int
    sim_time_s: float | None
    metrics: dict[str, float]  # the last round's metrics
    # FL only: per round, the participating clients and each one's gain (its local model's
    # validation accuracy minus the global model's before the round): what incentives pay for
    # (clients that were paid: the aggregated ones whose model changed, their gains)
    participation: tuple[tuple[tuple[int, ...], tuple[float, ...]], ...] = ()
    payouts: FederatedPayouts | None = None  # settled round by round, when the run pays
    population: PopulationOutcome | None = None


def resolve_clients_per_round(num_participants: int, clients_per_round: int | None,
                              client_fraction: float | None) -> int:
    """A count wins over a fraction; a fraction C gives max(round(C N), 1) clients (McMahan)."""
    if clients_per_round is not None:
        if clients_per_round < 1 or clients_per_round > num_participants:
            raise ConfigError(f"algorithm.clients_per_round must be in 1..{num_participants} "
                              f"(num_participants) (got {clients_per_round})")
        return int(clients_per_round)
    if client_fraction is None or not 0 < client_fraction <= 1:
        raise ConfigError(f"algorithm.client_fraction must be in (0, 1] (got {client_fraction})")
    return max(int(round(client_fraction * num_participants)), 1)


def check_schedule(rounds: int | None, sample_budget: int | None, eval_every: int) -> None:
    if rounds is None and sample_budget is None:
        raise ConfigError("set algorithm.rounds or a sample budget (algorithm.sample_budget / "
                          "algorithm.budget_epochs)")
    if rounds is not None and rounds < 1:
        raise ConfigError(f"algorithm.rounds must be >= 1 or null (got {rounds})")
    if rounds is None and sample_budget < 1:
        raise ConfigError(f"algorithm.sample_budget must be >= 1 (got {sample_budget})")
    if eval_every < 1:
        raise ConfigError(f"algorithm.eval_every must be >= 1 (got {eval_every})")


def finished(rnd: int, samples_seen: int, rounds: int | None, sample_budget: int | None,
             round_samples: int) -> bool:
    """Fixed rounds, or stop where the total is nearest the sample budget.

    With a budget the run stops after this round if one more round like it would end further
    from the budget than we are now (``samples_seen + round_samples / 2 >= budget``): neither
    side of the comparison gets a systematic extra half round of work.
    """
    if rounds is not None:
        return rnd >= rounds
    return samples_seen + round_samples / 2 >= sample_budget


def run_length(rounds: int | None, sample_budget: int | None, expected: int) -> dict:
    """What ``on_run_start`` says about a run's length: exact ``rounds``, or (budgeted runs, whose
    last round is only known when the budget is reached) the ``sample_budget`` and an estimate."""
    if rounds is not None:
        return {"rounds": rounds}
    return {"rounds": None, "sample_budget": sample_budget, "expected_rounds": expected}


def estimate_rounds(rounds: int | None, sample_budget: int | None, per_round: float) -> int:
    if rounds is not None:
        return rounds
    return max(math.ceil(sample_budget / max(per_round, 1e-9)), 1)


class FederatedRunner:
    """Rounds of client selection, local training and aggregation.

    Runs exactly ``rounds`` rounds if given, else until the number of sample passes trained is
    nearest ``sample_budget`` (within half a round's work; ``samples_seen`` reports the true
    count).

    A client whose weights come back non-finite (a diverging optimizer) is left out of the
    aggregate (the others' weights are renormalised), is not paid and does not update its
    control variate; ``failed_clients`` counts them per round.

    Resume: :meth:`state_dict` (called by an observer at a round's end) is the run after its
    last finished round (global model, server state, population, payouts, history);
    :meth:`load_state_dict` before :meth:`run` continues from there with the numbers of an
    uninterrupted run.
    """

    def __init__(self, hop_trainer: HopTrainer, strategy: FedAvg, *, seed: int,
                 clients_per_round: int, rounds: int | None = None,
                 sample_budget: int | None = None, server_lr: float = 1.0, eval_every: int = 1,
                 devices: Devices | None = None, observers: list[Observer] | tuple = (),
                 track_gains: bool = False, payouts: FederatedPayouts | None = None,
                 population: FederatedPopulation | None = None,
                 client_fraction: float | None = None):
        check_schedule(rounds, sample_budget, eval_every)
        self.track_gains = bool(track_gains)  # evaluate every local model (marginal_gain pay)
        if clients_per_round < 1:
            raise ConfigError(f"algorithm.clients_per_round must be >= 1 (got {clients_per_round})")
        if not server_lr > 0:
            raise ConfigError(f"algorithm.server_lr must be > 0 (got {server_lr})")
        self.hop_trainer = hop_trainer
        self.strategy = strategy
        self.seed = int(seed)
        self.clients_per_round = int(clients_per_round)
        self.rounds = None if rounds is None else int(rounds)
        self.sample_budget = None if sample_budget is None else int(sample_budget)
        self.server_lr = float(server_lr)
        self.eval_every = int(eval_every)
        self.devices = devices
        self.observers = Observers(observers)
        self.payouts = payouts  # settled every round (utility needs the coins as they come)
        self.population = population
        # with churn, C is a fraction of the *active* participants (else clients_per_round caps)
        self.client_fraction = client_fraction
        self._resume: dict | None = None
        self._live: dict | None = None

    # -- resume ----------------------------------------------------------------------------------
    _ARRAYS = ("active", "ever_active", "matches", "utility", "recent", "active_rounds", "held")

    def state_dict(self) -> dict:
        """The run after its last finished round (for a checkpoint)."""
        live = self._live
        if live is None:
            raise RuntimeError("state_dict() is available once a round has finished")
        return {"round": live["rnd"], "done": live["done"], "hops": live["hops"],
                "samples_seen": live["samples_seen"], "bytes": live["nbytes"],
                "sim_time_s": live["sim"], "global_acc": live["global_acc"],
                "model": [t.clone() for t in live["global_state"]],
                "population": {k: live[k].copy() for k in self._ARRAYS},
                "strategy": self.strategy.state_dict(),
                "payouts": payout_state(self.payouts),
                "history": [{"round": r.round, "hops": r.hops, "samples_seen": r.samples_seen,
                             "metrics": dict(r.metrics)} for r in live["history"]],
                "participation": [[list(sel), list(g)] for sel, g in live["participation"]]}

    def load_state_dict(self, state: dict) -> None:
        """Continue the next :meth:`run` after the round ``state`` was taken at."""
        self._resume = state

    def select(self, rnd: int, num_participants: int) -> list[int]:
        return self.select_among(rnd, np.arange(num_participants), self.clients_per_round)

    def select_among(self, rnd: int, candidates: np.ndarray, count: int) -> list[int]:
        if count >= len(candidates):
            return [int(i) for i in candidates]
        rng = numpy_rng(self.seed, "clients", rnd)
        return sorted(int(candidates[i]) for i in rng.choice(len(candidates), count,
                                                             replace=False))

    def clients_among(self, num_active: int) -> int:
        if self.client_fraction is not None:
            return resolve_clients_per_round(num_active, None, self.client_fraction)
        return min(self.clients_per_round, num_active)

    def run(self, model: torch.nn.Module, participants: list[ParticipantData],
            validation: EvalSet, test: EvalSet) -> RoundsResult:
        n = len(participants)
        if self.clients_per_round > n:
            raise ConfigError(f"algorithm.clients_per_round must be in 1..{n} "
                              f"(num_participants) (got {self.clients_per_round})")
        pop = self.population
        if pop is not None and len(pop.behaviour) != n:
            raise ConfigError(f"FL population: {len(pop.behaviour)} behaviours for {n} clients")
        behaviour = np.zeros(n, dtype=np.int8) if pop is None else np.asarray(pop.behaviour)
        economics = None if pop is None else pop.economics
        churn = None if pop is None or pop.churn is None or not pop.churn.enabled else pop.churn
        initial = n if pop is None or not pop.initial_active else int(pop.initial_active)
        active = np.zeros(n, dtype=bool)
        active[:initial] = True
        ever_active = active.copy()
        matches = np.zeros(n, dtype=np.int64)
        utility = np.zeros(n)
        recent = np.zeros((pop.churn.window if pop is not None and pop.churn else 10, n))
        active_rounds = np.zeros(n, dtype=np.int64)
        held = np.zeros(n)  # quality of the best global model each participant downloaded
        model = copy.deepcopy(model)
        state = list(model.state_dict(keep_vars=True).values())  # live tensors of the model
        params = [p for p in model.parameters() if p.requires_grad]
        param_ids = {id(p) for p in params}
        global_state = [t.detach().clone() for t in state]
        global_params = [g for t, g in zip(state, global_state) if id(t) in param_ids]
        self.strategy.start(global_params, n)
        sizes = np.array([len(p) for p in participants], dtype=np.float64)
        down_up = 2 * model_bytes(model) + self.strategy.extra_bytes(parameter_bytes(model))
        expected = estimate_rounds(self.rounds, self.sample_budget,
                                   sizes.mean() * self.clients_per_round
                                   * getattr(self.hop_trainer, "local_epochs", 1))
        self.observers.on_run_start({"total_hops": expected * self.clients_per_round,
                                     **run_length(self.rounds, self.sample_budget, expected),
                                     "participants": n})
        history: list[RoundRecord] = []
        participation = []
        rnd = hops = samples_seen = nbytes = 0
        sim = None if self.devices is None else 0.0
        done = False
        needs_global = self.track_gains or economics is not None
        global_acc = evaluate(model, validation)[1] if needs_global else 0.0
        if self._resume is not None:
            saved, self._resume = self._resume, None
            with torch.no_grad():
                for g, t, value in zip(global_state, state, saved["model"]):
                    g.copy_(value)
                    t.copy_(value)
            arrays = dict(zip(self._ARRAYS, (active, ever_active, matches, utility, recent,
                                             active_rounds, held)))
            for name, array in arrays.items():
                array[...] = saved["population"][name]
            self.strategy.load_state_dict(saved["strategy"])
            load_payout_state(self.payouts, saved["payouts"])
            rnd, done, hops = saved["round"], saved["done"], saved["hops"]
            samples_seen, nbytes, sim = saved["samples_seen"], saved["bytes"], saved["sim_time_s"]
            global_acc = saved["global_acc"]
            history = [RoundRecord(**row) for row in saved["history"]]
            participation = [(tuple(sel), tuple(g)) for sel, g in saved["participation"]]
        while not done:
            rnd += 1
            selected = self.select_among(rnd, np.flatnonzero(active),
                                         self.clients_among(int(active.sum())))
            matches[selected] += 1
            returning = [pid for pid in selected if behaviour[pid] != DROPOUT]
            gains, paid = [], []
            weights = sizes[returning] / sizes[returning].sum() if returning else []
            mean = [torch.zeros_like(g) if g.is_floating_point() else g.clone()
                    for g in global_state]
            losses, slowest, before = [], 0.0, samples_seen
            trained_samples = np.zeros(n)
            for pid in (p for p in selected if behaviour[p] == DROPOUT):
                nbytes += down_up // 2  # downloaded, never returned
                if sim is not None:
                    slowest = max(slowest, self.devices.transfer_seconds(pid, down_up // 2))
            failed, kept_weight = 0, 0.0
            for pid, w in zip(returning, weights):
                kind = int(behaviour[pid])
                with torch.no_grad():
                    for t, g in zip(state, global_state):
                        t.copy_(g)
                samples, diverged = 0, False
                if kind == NOISE:
                    gen = torch_generator(self.seed, "noise", rnd, int(participants[pid].pid))
                    with torch.no_grad():
                        for t in state:
                            if t.is_floating_point():
                                t.add_(pop.noise_std * torch.randn(t.shape, generator=gen))
                elif kind != FREE_RIDER:  # a free-rider sends the global model back as it is
                    stats = self.hop_trainer(
                        model, participants[pid], torch_generator(self.seed, "hop", rnd, pid),
                        grad_correction=self.strategy.correction(pid, params, global_params))
                    samples = stats.samples
                    hops += 1
                    diverged = not weights_finite(model)
                    if not diverged:
                        self.strategy.client_done(pid, params, global_params, stats)
                        losses.append(stats.train_loss)
                if diverged:  # non-finite weights: left out of the aggregate, never paid
                    failed += 1
                else:
                    if kind != FREE_RIDER:  # an unchanged model is never paid (as in DeRelayL)
                        paid.append(pid)
                        if self.track_gains:
                            gains.append(evaluate(model, validation)[1] - global_acc)
                    with torch.no_grad():
                        for acc, t in zip(mean, state):
                            if acc.is_floating_point():
                                acc.add_(t, alpha=float(w))
                    kept_weight += float(w)
                samples_seen += samples
                trained_samples[pid] = samples
                nbytes += down_up
                if sim is not None:
                    slowest = max(slowest, self.devices.transfer_seconds(pid, down_up)
                                  + self.devices.train_seconds(pid, samples))
            with torch.no_grad():
                if failed and kept_weight > 0:  # renormalise over the clients that were kept
                    for m in mean:
                        if m.is_floating_point():
                            m.div_(kept_weight)
                for g, m in zip(global_state, mean):
                    if not g.is_floating_point() or not returning or not kept_weight > 0:
                        continue
                    if self.server_lr == 1.0:
                        g.copy_(m)  # exactly the weighted mean
                    else:
                        g.add_(m - g, alpha=self.server_lr)
                for t, g in zip(state, global_state):
                    t.copy_(g)
            self.strategy.round_done()
            if sim is not None:
                sim += slowest
            done = finished(rnd, samples_seen, self.rounds, self.sample_budget,
                            samples_seen - before)
            credits = (self.payouts.settle(paid, gains) if self.payouts is not None
                       else np.zeros(n))
            metrics = {"train_loss": float(np.mean(losses)) if losses else float("nan"),
                       "clients": float(len(selected)), "failed_clients": float(failed)}
            if economics is not None:
                quality_before = held.copy()
                held[selected] = np.maximum(held[selected], global_acc)  # what they downloaded
                transfers = np.zeros(n)
                transfers[selected] = 1.0
                transfers[returning] = 2.0
                cost = (economics.cost_per_sample * trained_samples
                        + economics.cost_per_transfer * transfers)
                this_round = book_utility(
                    utility, recent, active_rounds, active, rnd,
                    credits + economics.model_value * np.maximum(held - quality_before, 0.0)
                    - cost)
                joined = left = 0
                if churn is not None:
                    joined, left = churn_step(active, ever_active, active_rounds, recent,
                                              economics.reservation, churn,
                                              numpy_rng(self.seed, "churn", rnd))
                    done = done or not active.any()  # nobody left to train: nobody will join
                coins = self.payouts.coins if self.payouts is not None else np.zeros(n)
                metrics.update(population_metrics(coins, utility, active, ever_active, initial))
                metrics.update(
                    coins_minted=float(credits.sum()),
                    coins_issued_total=self.payouts.minted if self.payouts is not None else 0.0,
                    utility_round_mean=(float(this_round[active].mean()) if active.any()
                                        else 0.0),
                    joined=float(joined), left=float(left))
                adversary = (behaviour != HONEST) & ever_active
                if adversary.any():
                    total = coins.sum()
                    metrics["adversary_coin_share"] = (float(coins[adversary].sum() / total)
                                                       if total > 0 else 0.0)
            metrics.update(evaluate_model(model, validation, test,
                                          rnd % self.eval_every == 0 or done))
            global_acc = metrics["val_acc"]
            participation.append((tuple(paid), tuple(gains)))
            record = make_round_record(rnd, hops, samples_seen, nbytes, sim, metrics)
            history.append(record)
            self._live = {"rnd": rnd, "done": done, "hops": hops, "samples_seen": samples_seen,
                          "nbytes": nbytes, "sim": sim, "global_acc": global_acc,
                          "global_state": global_state, "history": history,
                          "participation": participation, "active": active,
                          "ever_active": ever_active, "matches": matches, "utility": utility,
                          "recent": recent, "active_rounds": active_rounds, "held": held}
            self.observers.on_round(record)
        people = None
        if pop is not None:
            people = PopulationOutcome(behaviour=behaviour.copy(), active=active.copy(),
                                       ever_active=ever_active.copy(), utility=utility.copy(),
                                       matches=matches.copy(), initial_active=initial)
        result = RoundsResult(model=model, history=tuple(history), rounds=rnd, hops=hops,
                              samples_seen=samples_seen, bytes=nbytes, sim_time_s=sim,
                              metrics=dict(history[-1].metrics),
                              participation=tuple(participation), payouts=self.payouts,
                              population=people)
        self.observers.on_run_end(result)
        return result


def evaluate_model(model: torch.nn.Module, validation: EvalSet, test: EvalSet,
                   with_test: bool) -> dict[str, float]:
    val_loss, val_acc = evaluate(model, validation)
    out = {"val_loss": val_loss, "val_acc": val_acc}
    if with_test:
        out["test_loss"], out["test_acc"] = evaluate(model, test)
    return out


def make_round_record(rnd: int, hops: int, samples_seen: int, nbytes: int, sim: float | None,
                      metrics: dict[str, float]) -> RoundRecord:
    """A round's record; metric names match the relay's per-hop metrics."""
    full = {**metrics, "samples_seen": samples_seen, "bytes": nbytes}
    if sim is not None:
        full["sim_time_s"] = sim
    return RoundRecord(round=rnd, hops=hops, samples_seen=samples_seen, metrics=full)


# the payout book's running state: every array or number it keeps (the scheme and the declared
# samples come from the config)
def payout_state(payouts: FederatedPayouts | None) -> dict:
    if payouts is None:
        return {}
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(payouts).items()
            if k != "samples" and isinstance(v, (np.ndarray, float, int))}


def load_payout_state(payouts: FederatedPayouts | None, state: dict) -> None:
    if payouts is None:
        return
    for key, value in state.items():
        current = getattr(payouts, key)
        setattr(payouts, key,
                value.copy() if isinstance(current, np.ndarray) else type(current)(value))
