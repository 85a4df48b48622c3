"""Value functions of coalitions of participants: the test accuracy a coalition reaches alone.

Every value function here is a callable ``U(S) -> float`` over a frozenset ``S`` of participant
ids (``ParticipantData.pid``), for ``derelayl.valuation.shapley``. Each starts from the same model
with the same seed as the real run, and every hop of participant p in round r draws its batches from
``torch_generator(seed, "hop", r, p)`` whoever else is in the coalition (common random numbers:
a participant's own work never changes with the company it keeps). ``U(empty)`` is the accuracy
of the starting model.

- ``RelayCoalitionValue``: the relay run with the same schedule, rounds and seed, in which the
  participants outside S are skipped. The schedule still orders everybody, so S's hops come in
  the same relative order as in the full run; the full coalition *is* the original run. With
  ``batched``, ``many(coalitions)`` replays the run's hop sequence as a lineage (below) for a
  batch of coalitions in lockstep; a hop that diverges is discarded, as the relay does.
- ``FederatedCoalitionValue``: the core FL runner (FedAvg, FedProx, SCAFFOLD) given only S's
  clients; each client keeps its own hop stream (keyed by its pid, not by its place in S).
  ``clients_per_round`` becomes ``min(clients_per_round, |S|)``, or ``max(round(C |S|), 1)``
  with ``client_fraction=C``. With ``behaviour`` (per pid), every member keeps its behaviour
  (a free-rider still returns the global model, a dropout nothing); there is no churn in a
  coalition's run: it is FL over the members, all present from the first round. With
  ``batched``, ``many(coalitions)`` runs a batch of coalitions' FL runs in lockstep: each round,
  every run's training clients train as one batched computation.
- ``LineageCoalitionValue``: DeRelayL's best model rebuilt from the genesis weights by replaying
  the hops of its lineage ``[(round, participant), ...]`` whose participant is in S, in order,
  each with its original hop stream. The full coalition reproduces the best model bit for bit.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from derelayl.algorithms.fl.runner import (
    FederatedPopulation,
    FederatedRunner,
    resolve_clients_per_round,
)
from derelayl.algorithms.relay import RelayRunner
from derelayl.data.participants import ParticipantData
from derelayl.learning.batched import StackedData, evaluate_many, stack_states
from derelayl.learning.evaluation import EvalSet, evaluate
from derelayl.learning.hop import HopStats, HopTrainer
from derelayl.sim.devices import model_bytes, parameter_bytes
from derelayl.sim.errors import ConfigError
from derelayl.sim.seeding import derive_seed, numpy_rng, torch_generator

_NEVER = 10**12  # an eval_every that only triggers the runners' final test evaluation


def _pids(participants: Sequence[ParticipantData]) -> list[int]:
    pids = [int(p.pid) for p in participants]
    if len(set(pids)) != len(pids):
        raise ConfigError(f"shapley: participants need distinct pids (got {pids})")
    return pids


def _members(coalition: Iterable[int], players: Sequence[int]) -> frozenset:
    s = frozenset(int(p) for p in coalition)
    unknown = s - set(players)
    if unknown:
        raise ValueError(f"coalition has unknown players {sorted(unknown)}; players: {players}")
    return s


class _SkipOutsiders:
    """A hop trainer that trains members of the coalition and leaves the model alone for others."""

    def __init__(self, hop: HopTrainer, members: frozenset):
        self.hop, self.members = hop, members
        self.local_epochs = getattr(hop, "local_epochs", 1)

    def __call__(self, model, data, generator, grad_correction=None) -> HopStats:
        if int(data.pid) not in self.members:
            return HopStats(samples=0, steps=0, train_loss=float("nan"))
        return self.hop(model, data, generator, grad_correction=grad_correction)


class RelayCoalitionValue:
    """``U(S)``: test accuracy of the relay baton after ``runner.rounds`` rounds with only S.

    ``runner`` is the configured RelayRunner of the real run (its hop trainer, schedule, rounds
    and seed are reused; observers and devices are not). ``validation`` only feeds the runner's
    per-hop bookkeeping and defaults to one test sample, since it never influences training.
    """

    def __init__(
        self,
        runner: RelayRunner,
        model: torch.nn.Module,
        participants: Sequence[ParticipantData],
        test: EvalSet,
        validation: EvalSet | None = None,
        batched=None,
    ):
        self.runner, self.model, self.participants = runner, model, list(participants)
        self.players = _pids(self.participants)
        self.test = test
        self.validation = validation if validation is not None else test.subset(torch.arange(1))
        self.lockstep: LineageCoalitionValue | None = None
        if batched is not None and self.players == list(range(len(self.participants))):
            self.lockstep = LineageCoalitionValue(
                runner.hop_trainer,
                model,
                self.hop_sequence(),
                self.participants,
                seed=runner.seed,
                test=test,
                cache_bytes=0,
                batched=batched,
                discard_diverged=True,
            )
        else:  # one by one (CachedValue looks for a callable `many`)
            self.many = None  # type: ignore[assignment,method-assign]

    def hop_sequence(self) -> list[tuple[int, int]]:
        """Every hop of the full run, ``(round, participant)``, in order (the schedule orders
        everybody each round; a coalition's run is this sequence with the others skipped)."""
        r, sizes = self.runner, [len(p) for p in self.participants]
        return [
            (rnd, int(pid))
            for rnd in range(1, r.rounds + 1)
            for pid in r.schedule.order(rnd, sizes, numpy_rng(r.seed, "schedule", rnd))
        ]

    def many(self, coalitions: Sequence[Iterable[int]]) -> list[float]:
        """``U`` of each coalition: the hop sequence replayed in lockstep, batched."""
        assert self.lockstep is not None  # many() exists only with a BatchedHop
        return self.lockstep.many(coalitions)

    def __call__(self, coalition: Iterable[int]) -> float:
        members = _members(coalition, self.players)
        if not members:
            return evaluate(self.model, self.test)[1]
        r = self.runner
        runner = RelayRunner(
            _SkipOutsiders(r.hop_trainer, members),
            r.schedule,
            rounds=r.rounds,
            seed=r.seed,
            eval_every=_NEVER,
        )
        return float(runner.run(self.model, self.participants, self.validation, self.test).test_acc)


class _StreamByPid:
    """Gives each client the hop stream of its own pid, not of its index in the coalition.

    The FL runner derives a client's stream from (seed, "hop", round, index); the round is
    recovered from the generator's seed (looked up among the derived seeds of every index and
    round) and the stream is rebuilt with the client's pid. A generator that matches no round
    raises, so a change of the runner's stream naming cannot go unnoticed.
    """

    def __init__(self, hop: HopTrainer, seed: int, num_clients: int):
        self.hop, self.seed, self.num_clients = hop, int(seed), int(num_clients)
        self.local_epochs = getattr(hop, "local_epochs", 1)
        self.rounds_of: dict[int, int] = {}
        self.known_rounds = 0

    def _round(self, generator_seed: int) -> int:
        while generator_seed not in self.rounds_of:
            if self.known_rounds >= 1_000_000:
                raise RuntimeError(
                    "FederatedCoalitionValue: a client hop's generator matches no "
                    "(seed, 'hop', round, index) stream of the FL runner"
                )
            for rnd in range(self.known_rounds + 1, self.known_rounds + 257):
                for idx in range(self.num_clients):
                    self.rounds_of[derive_seed(self.seed, "hop", rnd, idx)] = rnd
            self.known_rounds += 256
        return self.rounds_of[generator_seed]

    def __call__(self, model, data, generator, grad_correction=None) -> HopStats:
        rnd = self._round(generator.initial_seed())
        return self.hop(
            model,
            data,
            torch_generator(self.seed, "hop", rnd, int(data.pid)),
            grad_correction=grad_correction,
        )


class FederatedCoalitionValue:
    """``U(S)``: test accuracy of the FL run (same strategy, rounds or budget, seed) with S only.

    ``runner`` is the configured FederatedRunner of the real run; its strategy is copied afresh
    for every coalition (SCAFFOLD keeps control variates).
    """

    def __init__(
        self,
        runner: FederatedRunner,
        model: torch.nn.Module,
        participants: Sequence[ParticipantData],
        test: EvalSet,
        validation: EvalSet | None = None,
        client_fraction: float | None = None,
        behaviour: Mapping[int, int] | None = None,
        noise_std: float = 1.0,
        batched=None,
        max_batch: int = 64,
    ):
        self.runner, self.model, self.participants = runner, model, list(participants)
        self.behaviour, self.noise_std = behaviour, float(noise_std)
        self.batched, self.max_batch = batched, int(max_batch)
        if batched is None:  # one by one (CachedValue looks for a callable `many`)
            self.many = None  # type: ignore[assignment,method-assign]
        self.row = {int(p.pid): i for i, p in enumerate(self.participants)}  # in ``data``
        self.players = _pids(self.participants)
        self.by_pid = {int(p.pid): p for p in self.participants}
        self.test = test
        self.validation = validation if validation is not None else test.subset(torch.arange(1))
        self.client_fraction = client_fraction
        if client_fraction is not None:
            resolve_clients_per_round(len(self.participants), None, client_fraction)

    def clients_per_round(self, size: int) -> int:
        if self.client_fraction is not None:
            return resolve_clients_per_round(size, None, self.client_fraction)
        return min(self.runner.clients_per_round, size)

    def __call__(self, coalition: Iterable[int]) -> float:
        members = _members(coalition, self.players)
        if not members:
            return evaluate(self.model, self.test)[1]
        clients = self.clients(members)
        result = self.coalition_runner(clients).run(self.model, clients, self.validation, self.test)
        return float(result.metrics["test_acc"])

    def clients(self, members: frozenset) -> list[ParticipantData]:
        return [self.by_pid[p] for p in self.players if p in members]  # original order

    def coalition_runner(self, clients: list[ParticipantData]) -> FederatedRunner:
        """The real run's runner for these clients alone (a fresh copy of its strategy)."""
        r = self.runner
        population = None
        if self.behaviour is not None:
            population = FederatedPopulation(
                behaviour=np.array([self.behaviour[int(c.pid)] for c in clients], dtype=np.int8),
                noise_std=self.noise_std,
            )
        return FederatedRunner(
            _StreamByPid(r.hop_trainer, r.seed, len(clients)),
            copy.deepcopy(r.strategy),
            seed=r.seed,
            clients_per_round=self.clients_per_round(len(clients)),
            rounds=r.rounds,
            sample_budget=r.sample_budget,
            eval_every=_NEVER,
            population=population,
        )

    def many(self, coalitions: Sequence[Iterable[int]]) -> list[float]:
        """``U`` of each coalition, up to ``max_batch`` runs in lockstep: each round, every
        run's training clients (from its own global model, with its own stream per pid and its
        strategy's correction) train as one batched computation."""
        out: list[float] = []
        sets = [_members(c, self.players) for c in coalitions]
        for start in range(0, len(sets), self.max_batch):
            out += self._lockstep(sets[start : start + self.max_batch])
        return out

    def _lockstep(self, sets: list[frozenset]) -> list[float]:
        lanes = [_Lane.start(self, members) for members in sets if members]
        while not all(lane.run.done for lane in lanes):
            live = [lane for lane in lanes if not lane.run.done]
            for lane in live:
                lane.open()
            trained = self._train(live)
            for lane, result in zip(live, trained):
                lane.close(result, self.validation, self.test)
        values = iter(float(lane.runner.finish(lane.run).metrics["test_acc"]) for lane in lanes)
        empty = evaluate(self.model, self.test)[1]
        return [next(values) if members else empty for members in sets]

    def _train(self, lanes: list[_Lane]) -> list[dict]:
        """Every lane's training clients of this round as one batched computation: per lane,
        ``{client index: (stacked params, index, stats)}`` as ``train_batched`` gives it."""
        jobs = [(lane, i) for lane in lanes for i in lane.training]
        if not jobs:
            return [{} for _ in lanes]
        module = lanes[0].run.model
        stacked = [
            torch.stack([lane.run.global_params[j] for lane, _ in jobs])
            for j in range(len(lanes[0].run.global_params))
        ]
        rows = [self.row[int(lane.clients[i].pid)] for lane, i in jobs]
        streams = [
            torch_generator(self.runner.seed, "hop", lane.rnd, int(lane.clients[i].pid))
            for lane, i in jobs
        ]
        slices, corrections, at = [], [], 0
        for lane in lanes:
            k = len(lane.training)
            slices.append((at, at + k))
            corrections.append(
                lane.runner.strategy.batched_correction(lane.training, lane.run.global_params)
                if k
                else None
            )
            at += k

        def correction(params, grads) -> None:
            for (a, b), fix in zip(slices, corrections):
                if fix is not None and b > a:
                    fix([p[a:b] for p in params], [g[a:b] for g in grads])

        assert self.batched is not None  # many() exists only with a BatchedHop
        stats = self.batched(module, stacked, self.data, rows, streams, correction=correction)
        out = []
        for lane, (a, b) in zip(lanes, slices):
            lane.run.hops += b - a
            view = [t[a:b] for t in stacked]
            out.append({i: (view, j, stats[a + j]) for j, i in enumerate(lane.training)})
        return out

    @property
    def data(self) -> StackedData:
        """Every player's data in one tensor (rows in ``self.row``), built once."""
        if not hasattr(self, "_data"):
            device = next(self.model.parameters()).device
            self._data = StackedData.of(self.participants, device)
        return self._data


class _Lane:
    """One coalition's FL run in a lockstep batch: its runner, run and the open round."""

    def __init__(self, runner: FederatedRunner, run, clients: list[ParticipantData]):
        self.runner, self.run, self.clients = runner, run, clients
        self.down_up = 2 * model_bytes(run.model) + runner.strategy.extra_bytes(
            parameter_bytes(run.model)
        )
        self.rnd, self.before = 0, 0
        self.selected: list[int] = []
        self.training: list[int] = []

    @classmethod
    def start(cls, value: FederatedCoalitionValue, members: frozenset) -> _Lane:
        clients = value.clients(members)
        runner = value.coalition_runner(clients)
        return cls(runner, runner.start(value.model, clients, value.validation), clients)

    def open(self) -> None:
        self.before = self.run.samples_seen
        self.rnd, self.selected = self.runner.open_round(self.run)
        self.training = self.runner.training(
            self.run, self.runner.returning(self.run, self.selected)
        )

    def close(self, trained: dict, validation: EvalSet, test: EvalSet) -> None:
        work = self.runner.local_updates(
            self.run, self.rnd, self.selected, self.clients, validation, trained=trained
        )
        self.runner.close_round(
            self.run, self.rnd, work, self.before, validation, test, self.down_up
        )


class LineageCoalitionValue:
    """``U(S)``: test accuracy of the lineage replayed from genesis with S's hops only.

    ``lineage`` lists the hops that made the model, oldest first, as ``(round, participant)``
    where ``round`` is the number the hop's stream was drawn with (``TrainedPerformance.train``'s
    ``round_``, i.e. the protocol's 0-based round). ``participants`` maps a participant id to its
    data (a list indexed by id, or a dict). The players are the distinct participants on the
    lineage, in order of first hop; other ids may appear in a coalition and change nothing.

    Replays share their common beginnings: the weights after the lineage's hop i depend only on
    which of the coalition's participants hopped up to i, so those states are kept (oldest
    dropped first beyond ``cache_bytes``) and a replay resumes from the deepest one it shares.
    A hop trains a fresh optimizer on the weights it receives, so resuming is bit-exact.

    With ``batched`` (a ``BatchedHop`` of the same hop settings), ``many(coalitions)`` replays
    the lineage for a batch of coalitions in lockstep: at hop i the coalitions holding its
    participant train, as one batched computation (same data, same stream), the others wait;
    coalitions that agree on the participants seen up to hop i hold the same weights there, so
    one of each such group trains and the others take its result. The models are then scored on
    the test split in one pass (``evaluate_many``).
    """

    def __init__(
        self,
        hop_trainer: HopTrainer,
        genesis: torch.nn.Module,
        lineage: Sequence[tuple[int, int]],
        participants: Sequence[ParticipantData] | Mapping[int, ParticipantData],
        seed: int,
        test: EvalSet,
        cache_bytes: int = 256 * 2**20,
        batched=None,
        max_batch: int = 1024,
        discard_diverged: bool = False,
    ):
        self.hop, self.seed, self.test = hop_trainer, int(seed), test
        self.batched, self.max_batch = batched, int(max_batch)
        # (the relay's rule: a hop whose weights are not finite leaves the model as it was)
        self.discard_diverged = discard_diverged
        if batched is None:
            # no batched evaluation: one by one (CachedValue looks for a callable `many`)
            self.many = None  # type: ignore[assignment,method-assign]
        self.genesis = copy.deepcopy(genesis)
        self.genesis_state = _clone_state(genesis)
        self.lineage = [(int(r), int(p)) for r, p in lineage]
        self.participants = participants
        for _, p in self.lineage:
            try:
                participants[p]
            except (IndexError, KeyError):
                raise ConfigError(f"shapley: lineage participant {p} has no data") from None
        self.players = list(dict.fromkeys(p for _, p in self.lineage))
        self.hops = 0  # hops trained over all calls (the cost of the value function)
        self.state_bytes = sum(t.numel() * t.element_size() for t in self.genesis_state.values())
        self.max_states = int(cache_bytes // max(self.state_bytes, 1))
        self.states: dict[tuple[int, frozenset], dict[str, torch.Tensor]] = {}

    def replay(self, coalition: Iterable[int]) -> torch.nn.Module:
        """The model made by the coalition's hops of the lineage (a fresh module)."""
        members = frozenset(int(p) for p in coalition)  # ids off the lineage are null players
        hops, done = [], set()
        for i, (rnd, p) in enumerate(self.lineage):
            if p in members:
                done.add(p)
                hops.append((i, rnd, p, (i, frozenset(done))))
        start, state = 0, self.genesis_state
        for j in range(len(hops) - 1, -1, -1):  # the deepest state this replay shares
            if hops[j][3] in self.states:
                start, state = j + 1, self.states[hops[j][3]]
                break
        model = copy.deepcopy(self.genesis)
        model.load_state_dict(state)
        for _, rnd, p, key in hops[start:]:
            self.hop(model, self.participants[p], torch_generator(self.seed, "hop", rnd, p))
            self.hops += 1
            if self.max_states > 0:
                if len(self.states) >= self.max_states:
                    del self.states[next(iter(self.states))]
                self.states[key] = _clone_state(model)
        return model

    def __call__(self, coalition: Iterable[int]) -> float:
        return float(evaluate(self.replay(coalition), self.test)[1])

    def many(self, coalitions: Sequence[Iterable[int]]) -> list[float]:
        """``U`` of each coalition, the replays run as batched computations."""
        sets = [frozenset(int(p) for p in c) for c in coalitions]
        module = self.genesis
        names = [n for n, _ in module.named_parameters()]
        device = next(module.parameters()).device
        order = list(dict.fromkeys(p for _, p in self.lineage))
        data = StackedData.of([self.participants[p] for p in order], device)
        row = {p: i for i, p in enumerate(order)}
        out: list[float] = []
        for start in range(0, len(sets), self.max_batch):
            chunk = sets[start : start + self.max_batch]
            stacked = stack_states([self.genesis_state] * len(chunk), names, device)
            seen: set[int] = set()
            for rnd, p in self.lineage:
                seen.add(p)
                active = [k for k, c in enumerate(chunk) if p in c]
                if not active:
                    continue
                trains, group = _groups(chunk, active, frozenset(seen))
                idx = torch.as_tensor(trains, device=device)
                sub = [t.index_select(0, idx) for t in stacked]
                before = [t.clone() for t in sub] if self.discard_diverged else None
                self.batched.same_data(
                    module, sub, data, row[p], torch_generator(self.seed, "hop", rnd, p)
                )
                if before is not None:
                    _discard_diverged(sub, before)
                self.hops += len(trains)
                where = torch.as_tensor(active, device=device)
                take = torch.as_tensor(group, device=device)
                for t, s in zip(stacked, sub):
                    t.index_copy_(0, where, s.index_select(0, take))
            _, accs = evaluate_many(module, stacked, self.test.x.to(device), self.test.y.to(device))
            out += accs.tolist()
        return out


def _discard_diverged(stacked: list[torch.Tensor], before: list[torch.Tensor]) -> None:
    """Models (rows) with a non-finite weight after the hop get their weights from before it."""
    bad = torch.zeros(stacked[0].shape[0], dtype=torch.bool, device=stacked[0].device)
    for t in stacked:
        bad |= ~torch.isfinite(t.reshape(t.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        for t, b in zip(stacked, before):
            t[bad] = b[bad]


def _groups(
    chunk: Sequence[frozenset], active: list[int], seen: frozenset
) -> tuple[list[int], list[int]]:
    """The coalitions ``active`` grouped by their members among ``seen`` (the same weights):
    the coalition that trains for each group, and each active one's group."""
    group_of: dict[frozenset, int] = {}
    trains: list[int] = []
    group = []
    for k in active:
        key = chunk[k] & seen
        if key not in group_of:
            group_of[key] = len(trains)
            trains.append(k)
        group.append(group_of[key])
    return trains, group


def _clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
