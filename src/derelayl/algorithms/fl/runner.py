"""The federated round runner: FedAvg, FedProx, SCAFFOLD, FedNova and FedAdam on the same hop
as the relay (the strategies: ``derelayl.algorithms.fl.strategies``).

A round, as phases of :meth:`FederatedRunner.play`:

1. :meth:`~FederatedRunner.select`: ``clients_per_round`` of the active participants (seeded
   stream ``clients/<round>``);
2. :meth:`~FederatedRunner.local_updates`: each returning client trains a copy of the global
   model with the product's hop (stream ``hop/<round>/<pid>``, the relay's stream, so one client
   with full participation *is* plain local training) and the strategy's gradient correction;
   adversaries act as their behaviour says (``derelayl.protocol.behaviours``);
3. the strategy aggregates what came back (``Strategy.aggregate``);
4. :meth:`~FederatedRunner.account`: bytes and simulated time (every selected client downloads
   and uploads the model, SCAFFOLD also its control variates; a round waits for its slowest
   client), payouts, and (with a population) utilities and churn;
5. evaluation and the round's record.

Populations (``FederatedPopulation``, off by default: everybody honest and always there), with
the keys and meanings of DeRelayL's economy: a ``dropout`` client downloads the model and returns
nothing (left out of the aggregate); a ``free_rider`` returns the global model unchanged,
aggregated with its declared sample weight (it dilutes the update) but, as in DeRelayL, never
paid (an unchanged model is never eligible); a ``noise`` client returns the global weights plus
N(0, noise_std^2); ``label_flip`` and ``sybil`` clients train honestly on the data they were
given (``adversarial_data``). With economics, incentive payouts are settled every round and each
participant's utility is coins received + model value x the gain in quality (validation
accuracy) of the best global model it downloaded - samples trained x cost per sample - transfers
x cost per transfer; with churn on, that utility decides who leaves and how many join
(``churn_step``, stream ``churn/<round>``), and clients are selected among the active
participants only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from derelayl.algorithms.fl.strategies import ClientUpdate, FedAvg
from derelayl.algorithms.rounds import (
    RoundsResult,
    check_schedule,
    estimate_rounds,
    evaluate_model,
    finished,
    make_round_record,
    run_length,
)
from derelayl.data.participants import ParticipantData
from derelayl.learning.batched import BatchedHop, StackedData, evaluate_many
from derelayl.learning.evaluation import EvalSet, evaluate
from derelayl.learning.hop import HopStats, HopTrainer, weights_finite
from derelayl.protocol.behaviours import DROPOUT, FREE_RIDER, HONEST, NOISE, add_weight_noise
from derelayl.protocol.incentives import FederatedPayouts
from derelayl.protocol.population import (
    ChurnParams,
    Economics,
    book_utility,
    churn_step,
    population_metrics,
)
from derelayl.sim.devices import Devices, Meter, model_bytes, parameter_bytes
from derelayl.sim.errors import ConfigError
from derelayl.sim.events import Observer, Observers, RoundRecord
from derelayl.sim.seeding import numpy_rng, torch_generator

# a run to a sample budget also ends after this many rounds in a row in which no client trained:
# clients that never train (free riders, noise adversaries, dropouts; e.g. a Shapley coalition
# of them) would otherwise never reach the budget
IDLE_ROUNDS_TO_STOP = 10


@dataclass(frozen=True)
class FederatedPopulation:
    """Who an FL run's clients are: behaviour codes per identity (``protocol.behaviours``), and
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


def resolve_clients_per_round(
    num_participants: int, clients_per_round: int | None, client_fraction: float | None
) -> int:
    """A count wins over a fraction; a fraction C gives max(round(C N), 1) clients (McMahan)."""
    if clients_per_round is not None:
        if clients_per_round < 1 or clients_per_round > num_participants:
            raise ConfigError(
                f"algorithm.clients_per_round must be in 1..{num_participants} "
                f"(num_participants) (got {clients_per_round})"
            )
        return int(clients_per_round)
    if client_fraction is None or not 0 < client_fraction <= 1:
        raise ConfigError(f"algorithm.client_fraction must be in (0, 1] (got {client_fraction})")
    return max(int(round(client_fraction * num_participants)), 1)


# population arrays (per identity) a run keeps, in its checkpoint order
_ARRAYS = ("active", "ever_active", "matches", "utility", "recent", "active_rounds", "held")


@dataclass
class FederatedRun:
    """An FL run in progress: the model, the server's view of the population, the counters and
    the history. What a checkpoint holds (with the strategy's and the payouts' state)."""

    model: torch.nn.Module
    state: list[torch.Tensor]  # the model's live tensors (state_dict order)
    params: list[torch.nn.Parameter]  # its trainable parameters
    global_state: list[torch.Tensor]  # the global model (state_dict order)
    global_params: list[torch.Tensor]  # its trainable parameters
    behaviour: np.ndarray
    sizes: np.ndarray  # declared samples per identity (aggregation weights)
    initial: int  # identities active at the start
    meter: Meter
    active: np.ndarray
    ever_active: np.ndarray
    matches: np.ndarray
    utility: np.ndarray
    recent: np.ndarray  # (window x N) recent utilities
    active_rounds: np.ndarray
    held: np.ndarray  # quality of the best global model each participant downloaded
    data: StackedData | None = None  # every client's data in one tensor (batched execution)
    rnd: int = 0
    hops: int = 0
    samples_seen: int = 0
    idle_rounds: int = 0  # rounds in a row in which no client trained
    done: bool = False
    global_acc: float = 0.0
    history: list[RoundRecord] = field(default_factory=list)
    participation: list[tuple[tuple[int, ...], tuple[float, ...]]] = field(default_factory=list)

    def load_global(self) -> None:
        """The model's tensors := the global model's."""
        with torch.no_grad():
            for t, g in zip(self.state, self.global_state):
                t.copy_(g)


@dataclass
class RoundWork:
    """What a round's local updates produced."""

    selected: list[int]
    returning: list[int]
    updates: list[ClientUpdate] = field(default_factory=list)
    paid: list[int] = field(default_factory=list)  # changed models that came back
    gains: list[float] = field(default_factory=list)  # their validation gain (track_gains)
    losses: list[float] = field(default_factory=list)
    trained_samples: dict[int, int] = field(default_factory=dict)
    failed: int = 0
    dropped_weight: float = 0.0


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

    def __init__(
        self,
        hop_trainer: HopTrainer,
        strategy: FedAvg,
        *,
        seed: int,
        clients_per_round: int,
        rounds: int | None = None,
        sample_budget: int | None = None,
        eval_every: int = 1,
        devices: Devices | None = None,
        observers: list[Observer] | tuple = (),
        track_gains: bool = False,
        payouts: FederatedPayouts | None = None,
        population: FederatedPopulation | None = None,
        client_fraction: float | None = None,
        batched: BatchedHop | None = None,
    ):
        check_schedule(rounds, sample_budget, eval_every)
        if clients_per_round < 1:
            raise ConfigError(f"algorithm.clients_per_round must be >= 1 (got {clients_per_round})")
        self.hop_trainer = hop_trainer
        self.strategy = strategy
        self.seed = int(seed)
        self.clients_per_round = int(clients_per_round)
        self.rounds = None if rounds is None else int(rounds)
        self.sample_budget = None if sample_budget is None else int(sample_budget)
        self.eval_every = int(eval_every)
        self.devices = devices
        self.observers = Observers(observers)
        self.track_gains = bool(track_gains)  # evaluate every local model (marginal_gain pay)
        self.payouts = payouts  # settled every round (utility needs the coins as they come)
        self.population = population
        # with churn, C is a fraction of the *active* participants (else clients_per_round caps)
        self.client_fraction = client_fraction
        # a round's training clients as one batched computation (None: one after another)
        self.batched = batched
        self._resume: dict | None = None
        self._run: FederatedRun | None = None

    # -- the population's settings -----------------------------------------------------------------
    @property
    def economics(self) -> Economics | None:
        return None if self.population is None else self.population.economics

    @property
    def churn(self) -> ChurnParams | None:
        pop = self.population
        return None if pop is None or pop.churn is None or not pop.churn.enabled else pop.churn

    # -- resume ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The run after its last finished round (for a checkpoint)."""
        run = self._run
        if run is None or run.rnd == 0:
            raise RuntimeError("state_dict() is available once a round has finished")
        return {
            "round": run.rnd,
            "done": run.done,
            "hops": run.hops,
            "samples_seen": run.samples_seen,
            "bytes": run.meter.bytes,
            "sim_time_s": run.meter.sim_time_s,
            "global_acc": run.global_acc,
            "model": [t.clone() for t in run.global_state],
            "population": {k: getattr(run, k).copy() for k in _ARRAYS},
            "strategy": self.strategy.state_dict(),
            "payouts": payout_state(self.payouts),
            "history": [
                {
                    "round": r.round,
                    "hops": r.hops,
                    "samples_seen": r.samples_seen,
                    "metrics": dict(r.metrics),
                }
                for r in run.history
            ],
            "participation": [[list(sel), list(g)] for sel, g in run.participation],
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue the next :meth:`run` after the round ``state`` was taken at."""
        self._resume = state

    def _restore(self, run: FederatedRun, saved: dict) -> None:
        with torch.no_grad():
            for g, t, value in zip(run.global_state, run.state, saved["model"]):
                g.copy_(value)
                t.copy_(value)
        for name in _ARRAYS:
            getattr(run, name)[...] = saved["population"][name]
        self.strategy.load_state_dict(saved["strategy"])
        load_payout_state(self.payouts, saved["payouts"])
        run.rnd, run.done, run.hops = saved["round"], saved["done"], saved["hops"]
        run.samples_seen = saved["samples_seen"]
        run.meter.bytes, run.meter.sim_time_s = saved["bytes"], saved["sim_time_s"]
        run.global_acc = saved["global_acc"]
        run.history = [RoundRecord(**row) for row in saved["history"]]
        run.participation = [(tuple(sel), tuple(g)) for sel, g in saved["participation"]]

    # -- 1. selection ------------------------------------------------------------------------------
    def select(self, rnd: int, num_participants: int) -> list[int]:
        return self.select_among(rnd, np.arange(num_participants), self.clients_per_round)

    def select_among(self, rnd: int, candidates: np.ndarray, count: int) -> list[int]:
        if count >= len(candidates):
            return [int(i) for i in candidates]
        rng = numpy_rng(self.seed, "clients", rnd)
        return sorted(int(candidates[i]) for i in rng.choice(len(candidates), count, replace=False))

    def clients_among(self, num_active: int) -> int:
        if self.client_fraction is not None:
            return resolve_clients_per_round(num_active, None, self.client_fraction)
        return min(self.clients_per_round, num_active)

    # -- 2. local updates --------------------------------------------------------------------------
    def local_updates(
        self,
        run: FederatedRun,
        rnd: int,
        selected: list[int],
        participants: list[ParticipantData],
        validation: EvalSet,
        trained: dict | None = None,
    ) -> RoundWork:
        """Every returning client's model, in the order the clients were selected; ``trained``:
        the training clients' results computed elsewhere (``train_batched``'s form), e.g. with
        other runs' clients in one batched computation."""
        returning = self.returning(run, selected)
        work = RoundWork(selected=selected, returning=returning)
        weights = run.sizes[returning] / run.sizes[returning].sum() if returning else []
        if trained is None:
            trained = self.train_batched(run, rnd, returning) if self.batched is not None else {}
        for pid, w in zip(returning, weights):
            if pid in trained:
                stacked, k, stats = trained[pid]
                run.load_global()
                with torch.no_grad():
                    for p, t in zip(run.params, stacked):
                        p.copy_(t[k])
                self.returned(run, pid, float(w), stats, int(run.behaviour[pid]), work)
            else:
                self.local_update(run, rnd, pid, float(w), participants, work)
        if self.track_gains:
            work.gains = self.validation_gains(run, work, validation)
        return work

    @staticmethod
    def validation_gains(run: FederatedRun, work: RoundWork, validation: EvalSet) -> list[float]:
        """Each paid client's model's validation accuracy minus the global model's (the
        marginal-gain payout's measure), in ``work.paid``'s order: the round's models scored in
        one batched pass (``evaluate_many``: ``evaluate``'s accuracies exactly); one after
        another for a model with buffers, which the stacked parameters would not carry."""
        states = {u.pid: u.state for u in work.updates}
        paid = [states[pid] for pid in work.paid]
        if not paid:
            return []
        if len(run.state) == len(run.params) and all(s is p for s, p in zip(run.state, run.params)):
            stacked = [torch.stack(tensors) for tensors in zip(*paid)]
            _, acc = evaluate_many(run.model, stacked, validation.x, validation.y)
            return [a - run.global_acc for a in acc.tolist()]
        gains = []
        for state in paid:
            with torch.no_grad():
                for t, v in zip(run.state, state):
                    t.copy_(v)
            gains.append(evaluate(run.model, validation)[1] - run.global_acc)
        return gains

    @staticmethod
    def returning(run: FederatedRun, selected: list[int]) -> list[int]:
        """The selected clients that send a model back (all but dropouts)."""
        return [pid for pid in selected if run.behaviour[pid] != DROPOUT]

    @staticmethod
    def training(run: FederatedRun, returning: list[int]) -> list[int]:
        """The returning clients that train (not a free-rider, not a noise adversary)."""
        return [pid for pid in returning if int(run.behaviour[pid]) not in (FREE_RIDER, NOISE)]

    def train_batched(self, run: FederatedRun, rnd: int, returning: list[int]) -> dict:
        """The round's training clients as one batched computation from the global model:
        ``{pid: (stacked params, index, stats)}``."""
        pids = self.training(run, returning)
        if not pids:
            return {}
        k = len(pids)
        # called with batched execution only, which stacks the clients' data (``rounds``)
        assert self.batched is not None and run.data is not None
        stacked = [g.unsqueeze(0).repeat(k, *([1] * g.dim())) for g in run.global_params]
        stats = self.batched(
            run.model,
            stacked,
            run.data,
            pids,
            [torch_generator(self.seed, "hop", rnd, pid) for pid in pids],
            correction=self.strategy.batched_correction(pids, run.global_params),
        )
        run.hops += k
        return {pid: (stacked, i, stats[i]) for i, pid in enumerate(pids)}

    def local_update(
        self,
        run: FederatedRun,
        rnd: int,
        pid: int,
        weight: float,
        participants: list[ParticipantData],
        work: RoundWork,
    ) -> None:
        """Client ``pid`` trains the global model (or acts as its behaviour says)."""
        kind = int(run.behaviour[pid])
        run.load_global()
        stats: HopStats | None = None
        if kind == NOISE:
            assert self.population is not None  # behaviours come with a population
            add_weight_noise(
                run.state, self.population.noise_std, self.seed, rnd, int(participants[pid].pid)
            )
        elif kind != FREE_RIDER:  # a free-rider sends the global model back as it is
            stats = self.hop_trainer(
                run.model,
                participants[pid],
                torch_generator(self.seed, "hop", rnd, pid),
                grad_correction=self.strategy.correction(pid, run.params, run.global_params),
            )
            run.hops += 1
        self.returned(run, pid, weight, stats, kind, work)

    def returned(
        self,
        run: FederatedRun,
        pid: int,
        weight: float,
        stats: HopStats | None,
        kind: int,
        work: RoundWork,
    ) -> None:
        """Book what client ``pid`` sent back (the model holds it): its update, or its failure
        (non-finite weights: left out of the aggregate, never paid)."""
        samples = 0 if stats is None else stats.samples
        work.trained_samples[pid] = samples
        run.samples_seen += samples
        if stats is not None and not weights_finite(run.model):
            work.failed += 1
            work.dropped_weight += weight
            return
        if stats is not None:
            self.strategy.client_done(pid, run.params, run.global_params, stats)
            work.losses.append(stats.train_loss)
        if kind != FREE_RIDER:  # an unchanged model is never paid (as in DeRelayL): its
            work.paid.append(pid)  # gain (track_gains) is scored with the round's others
        work.updates.append(
            ClientUpdate(
                pid,
                [t.detach().clone() for t in run.state],
                weight,
                0 if stats is None else stats.steps,
            )
        )

    # -- 4. accounting -----------------------------------------------------------------------------
    def account(self, run: FederatedRun, rnd: int, work: RoundWork, down_up: int) -> None:
        """Bytes and simulated time: every selected client downloads the model, a returning one
        uploads it (``down_up`` both ways); the round waits for its slowest client."""
        seconds = []
        for pid in work.selected:
            if pid in work.trained_samples:
                run.meter.move(down_up)
                seconds.append(run.meter.seconds(pid, work.trained_samples[pid], down_up))
            else:  # a dropout: downloaded, never returned
                run.meter.move(down_up // 2)
                seconds.append(run.meter.seconds(pid, 0, down_up // 2))
        run.meter.wait_for_slowest(seconds)

    def book_population(
        self, run: FederatedRun, rnd: int, work: RoundWork, credits: np.ndarray
    ) -> dict[str, float]:
        """Utilities of the round (payout, better model downloaded, costs), churn, and the
        population's metrics (DeRelayL's names)."""
        economics, n = self.economics, len(run.behaviour)
        assert economics is not None  # called only when the run has economics
        selected, returning = work.selected, work.returning
        trained = np.zeros(n)
        for pid, samples in work.trained_samples.items():
            trained[pid] = samples
        quality_before = run.held.copy()
        run.held[selected] = np.maximum(run.held[selected], run.global_acc)  # downloaded
        transfers = np.zeros(n)
        transfers[selected] = 1.0
        transfers[returning] = 2.0
        cost = economics.cost_per_sample * trained + economics.cost_per_transfer * transfers
        this_round = book_utility(
            run.utility,
            run.recent,
            run.active_rounds,
            run.active,
            rnd,
            credits + economics.model_value * np.maximum(run.held - quality_before, 0.0) - cost,
        )
        joined = left = 0
        if self.churn is not None:
            joined, left = churn_step(
                run.active,
                run.ever_active,
                run.active_rounds,
                run.recent,
                economics.reservation,
                self.churn,
                numpy_rng(self.seed, "churn", rnd),
            )
            run.done = run.done or not run.active.any()  # nobody left: nobody will join
        coins = self.payouts.coins if self.payouts is not None else np.zeros(n)
        metrics = population_metrics(coins, run.utility, run.active, run.ever_active, run.initial)
        metrics.update(
            coins_minted=float(credits.sum()),
            coins_issued_total=self.payouts.minted if self.payouts is not None else 0.0,
            utility_round_mean=float(this_round[run.active].mean()) if run.active.any() else 0.0,
            joined=float(joined),
            left=float(left),
        )
        adversary = (run.behaviour != HONEST) & run.ever_active
        if adversary.any():
            total = coins.sum()
            metrics["adversary_coin_share"] = (
                float(coins[adversary].sum() / total) if total > 0 else 0.0
            )
        return metrics

    # -- the run -----------------------------------------------------------------------------------
    def start(
        self, model: torch.nn.Module, participants: list[ParticipantData], validation: EvalSet
    ) -> FederatedRun:
        n = len(participants)
        if self.clients_per_round > n:
            raise ConfigError(
                f"algorithm.clients_per_round must be in 1..{n} "
                f"(num_participants) (got {self.clients_per_round})"
            )
        pop = self.population
        if pop is not None and len(pop.behaviour) != n:
            raise ConfigError(f"FL population: {len(pop.behaviour)} behaviours for {n} clients")
        model = copy.deepcopy(model)
        state = list(model.state_dict(keep_vars=True).values())  # live tensors of the model
        params = [p for p in model.parameters() if p.requires_grad]
        param_ids = {id(p) for p in params}
        global_state = [t.detach().clone() for t in state]
        global_params = [g for t, g in zip(state, global_state) if id(t) in param_ids]
        self.strategy.start(global_params, n, param_mask=[id(t) in param_ids for t in state])
        initial = n if pop is None or not pop.initial_active else int(pop.initial_active)
        active = np.zeros(n, dtype=bool)
        active[:initial] = True
        window = pop.churn.window if pop is not None and pop.churn else 10
        run = FederatedRun(
            model=model,
            state=state,
            params=params,
            global_state=global_state,
            global_params=global_params,
            behaviour=np.zeros(n, dtype=np.int8) if pop is None else np.asarray(pop.behaviour),
            sizes=np.array([len(p) for p in participants], dtype=np.float64),
            initial=initial,
            meter=Meter(self.devices),
            active=active,
            ever_active=active.copy(),
            matches=np.zeros(n, dtype=np.int64),
            utility=np.zeros(n),
            recent=np.zeros((window, n)),
            active_rounds=np.zeros(n, dtype=np.int64),
            held=np.zeros(n),
        )
        if self.batched is not None:
            run.data = StackedData.of(participants, run.global_state[0].device)
        if self.track_gains or self.economics is not None:
            run.global_acc = evaluate(model, validation)[1]
        return run

    def play(
        self,
        run: FederatedRun,
        participants: list[ParticipantData],
        validation: EvalSet,
        test: EvalSet,
        down_up: int,
    ) -> RoundRecord:
        """One round: select, local updates, aggregate, account, evaluate."""
        rnd, selected = self.open_round(run)
        before = run.samples_seen
        work = self.local_updates(run, rnd, selected, participants, validation)
        return self.close_round(run, rnd, work, before, validation, test, down_up)

    def open_round(self, run: FederatedRun) -> tuple[int, list[int]]:
        """The next round's number and its selected clients."""
        rnd = run.rnd = run.rnd + 1
        selected = self.select_among(
            rnd, np.flatnonzero(run.active), self.clients_among(int(run.active.sum()))
        )
        run.matches[selected] += 1
        return rnd, selected

    def close_round(
        self,
        run: FederatedRun,
        rnd: int,
        work: RoundWork,
        before: int,
        validation: EvalSet,
        test: EvalSet,
        down_up: int,
    ) -> RoundRecord:
        """Aggregate the round's updates, account, pay and evaluate (``before``: the samples
        seen before the round)."""
        selected = work.selected
        self.strategy.aggregate(run.global_state, work.updates, work.dropped_weight)
        run.load_global()
        self.strategy.round_done()
        self.account(run, rnd, work, down_up)
        run.idle_rounds = run.idle_rounds + 1 if run.samples_seen == before else 0
        run.done = finished(
            rnd, run.samples_seen, self.rounds, self.sample_budget, run.samples_seen - before
        ) or (self.sample_budget is not None and run.idle_rounds >= IDLE_ROUNDS_TO_STOP)
        credits = (
            self.payouts.settle(work.paid, work.gains)
            if self.payouts is not None
            else np.zeros(len(run.behaviour))
        )
        metrics = {
            "train_loss": float(np.mean(work.losses)) if work.losses else float("nan"),
            "clients": float(len(selected)),
            "failed_clients": float(work.failed),
        }
        if self.economics is not None:
            metrics.update(self.book_population(run, rnd, work, credits))
        metrics.update(
            evaluate_model(run.model, validation, test, rnd % self.eval_every == 0 or run.done)
        )
        run.global_acc = metrics["val_acc"]
        run.participation.append((tuple(work.paid), tuple(work.gains)))
        record = make_round_record(
            rnd, run.hops, run.samples_seen, run.meter.bytes, run.meter.sim_time_s, metrics
        )
        run.history.append(record)
        return record

    def run(
        self,
        model: torch.nn.Module,
        participants: list[ParticipantData],
        validation: EvalSet,
        test: EvalSet,
    ) -> RoundsResult:
        run = self.start(model, participants, validation)
        self._run = run
        down_up = 2 * model_bytes(run.model) + self.strategy.extra_bytes(parameter_bytes(run.model))
        expected = estimate_rounds(
            self.rounds,
            self.sample_budget,
            run.sizes.mean()
            * self.clients_per_round
            * getattr(self.hop_trainer, "local_epochs", 1),
        )
        self.observers.on_run_start(
            {
                "total_hops": expected * self.clients_per_round,
                **run_length(self.rounds, self.sample_budget, expected),
                "participants": len(participants),
            }
        )
        if self._resume is not None:
            saved, self._resume = self._resume, None
            self._restore(run, saved)
        while not run.done:
            self.observers.on_round(self.play(run, participants, validation, test, down_up))
        return self.finish(run)

    def finish(self, run: FederatedRun) -> RoundsResult:
        people = None
        if self.population is not None:
            people = PopulationOutcome(
                behaviour=run.behaviour.copy(),
                active=run.active.copy(),
                ever_active=run.ever_active.copy(),
                utility=run.utility.copy(),
                matches=run.matches.copy(),
                initial_active=run.initial,
            )
        result = RoundsResult(
            model=run.model,
            history=tuple(run.history),
            rounds=run.rnd,
            hops=run.hops,
            samples_seen=run.samples_seen,
            bytes=run.meter.bytes,
            sim_time_s=run.meter.sim_time_s,
            metrics=dict(run.history[-1].metrics),
            participation=tuple(run.participation),
            payouts=self.payouts,
            population=people,
        )
        self.observers.on_run_end(result)
        return result


# the payout book's running state: every array or number it keeps (the scheme and the declared
# samples come from the config)
def payout_state(payouts: FederatedPayouts | None) -> dict:
    if payouts is None:
        return {}
    return {
        k: (v.copy() if isinstance(v, np.ndarray) else v)
        for k, v in vars(payouts).items()
        if k != "samples" and isinstance(v, (np.ndarray, float, int))
    }


def load_payout_state(payouts: FederatedPayouts | None, state: dict) -> None:
    if payouts is None:
        return
    for key, value in state.items():
        current = getattr(payouts, key)
        setattr(
            payouts, key, value.copy() if isinstance(current, np.ndarray) else type(current)(value)
        )
