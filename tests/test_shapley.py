"""Shapley values: axioms and hand-computed games, truncated Monte Carlo against exact values,
correlation helpers, and the coalition value functions of the relay, FL and DeRelayL lineages."""

import functools
import itertools
import math

import numpy as np
import pytest
import torch

from derelayl.algorithms.fl.runner import FederatedRunner
from derelayl.algorithms.fl.strategies import FedAvg
from derelayl.algorithms.relay import RelayRunner
from derelayl.algorithms.schedules import RandomSchedule, RingSchedule
from derelayl.data.participants import ParticipantData
from derelayl.learning.evaluation import EvalSet, evaluate
from derelayl.learning.hop import HopStats, LightningHop
from derelayl.models.lit import ClassifierModule
from derelayl.models.nets import MLP
from derelayl.protocol.trained import InMemoryModelStore, TrainedPerformance
from derelayl.sim.errors import ConfigError
from derelayl.sim.seeding import numpy_rng, torch_generator
from derelayl.valuation.coalitions import (
    FederatedCoalitionValue,
    LineageCoalitionValue,
    RelayCoalitionValue,
)
from derelayl.valuation.shapley import (
    CachedValue,
    exact_shapley,
    pearson,
    rankdata,
    shapley_values,
    spearman,
    tmc_shapley,
)

torch.set_num_threads(1)


# -- games ------------------------------------------------------------------------------------
def by_permutations(players, value):
    """The definition: marginal contributions averaged over all n! orders."""
    phi = {p: 0.0 for p in players}
    orders = list(itertools.permutations(players))
    for order in orders:
        prefix = frozenset()
        for p in order:
            phi[p] += value(prefix | {p}) - value(prefix)
            prefix = prefix | {p}
    return {p: v / len(orders) for p, v in phi.items()}


def random_game(n, seed):
    rng = np.random.default_rng(seed)
    table = {
        frozenset(s): float(rng.normal())
        for k in range(n + 1)
        for s in itertools.combinations(range(n), k)
    }
    return lambda s: table[frozenset(s)]


def saturating_game(q):
    """U(S) = 1 - prod_{i in S} (1 - q_i): monotone, saturates like accuracy does."""
    return lambda s: 1.0 - math.prod(1.0 - q[i] for i in s)


def close(a, b, tol=1e-12):
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= tol for k in a)


def test_glove_game_by_hand():
    left, right = {0, 1}, {2}
    game = lambda s: float(min(len(s & left), len(s & right)))  # noqa: E731
    assert close(exact_shapley([0, 1, 2], game), {0: 1 / 6, 1: 1 / 6, 2: 2 / 3})


def test_weighted_majority_game_by_hand():
    weights, quota = {"a": 2, "b": 1, "c": 1}, 3
    game = lambda s: float(sum(weights[p] for p in s) >= quota)  # noqa: E731
    assert close(exact_shapley(["a", "b", "c"], game), {"a": 2 / 3, "b": 1 / 6, "c": 1 / 6})
    # [4; 3, 1, 1, 1]: the big player is pivotal unless it comes first (3/4); a small one only
    # right after the big player opens the order (1/4 * 1/3)
    weights, quota = {0: 3, 1: 1, 2: 1, 3: 1}, 4
    game = lambda s: float(sum(weights[p] for p in s) >= quota)  # noqa: E731
    assert close(exact_shapley(range(4), game), {0: 0.75, 1: 1 / 12, 2: 1 / 12, 3: 1 / 12})


@pytest.mark.parametrize("n,seed", [(1, 0), (3, 1), (5, 2), (6, 3)])
def test_exact_equals_the_permutation_definition_on_random_games(n, seed):
    game = random_game(n, seed)
    assert close(exact_shapley(range(n), game), by_permutations(range(n), game), 1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_efficiency(seed):
    game = random_game(7, seed)
    phi = exact_shapley(range(7), game)
    assert sum(phi.values()) == pytest.approx(game(range(7)) - game(()), abs=1e-9)


def test_symmetry_and_null_player():
    q = {0: 0.3, 1: 0.3, 2: 0.6, 3: 0.0, 4: 0.1}  # 0 and 1 interchangeable, 3 adds nothing
    phi = exact_shapley(range(5), saturating_game(q))
    assert phi[0] == pytest.approx(phi[1], abs=1e-12)
    assert phi[3] == pytest.approx(0.0, abs=1e-12)
    assert phi[2] > phi[0] > phi[4] > 0


def test_null_player_in_random_game():
    base = random_game(4, 7)
    game = lambda s: base(set(s) - {4})  # noqa: E731  player 4 never changes anything
    phi = exact_shapley(range(5), game)
    assert phi[4] == pytest.approx(0.0, abs=1e-12)
    assert close({k: v for k, v in phi.items() if k != 4}, exact_shapley(range(4), base), 1e-9)


def test_additivity():
    u, w = random_game(5, 11), random_game(5, 12)
    phi_u, phi_w = exact_shapley(range(5), u), exact_shapley(range(5), w)
    phi_sum = exact_shapley(range(5), lambda s: u(s) + w(s))
    assert close(phi_sum, {p: phi_u[p] + phi_w[p] for p in range(5)}, 1e-9)


def test_each_coalition_is_evaluated_once():
    calls = []
    game = random_game(5, 0)
    counted = lambda s: calls.append(s) or game(s)  # noqa: E731
    exact_shapley(range(5), counted)
    assert len(calls) == 32 and len(set(calls)) == 32
    cached = CachedValue(counted)
    shapley_values(range(5), cached)
    tmc_shapley(range(5), cached, permutations=50, tolerance=0.0, rng=numpy_rng(0, "s"))
    assert cached.evaluations == 32 and len(calls) == 64


def test_exact_refuses_too_many_players():
    with pytest.raises(ConfigError, match="13 players.*limit is 12"):
        exact_shapley(range(13), lambda s: 0.0)


# -- truncated Monte Carlo --------------------------------------------------------------------
Q8 = {0: 0.05, 1: 0.1, 2: 0.2, 3: 0.3, 4: 0.3, 5: 0.5, 6: 0.02, 7: 0.0}


def test_tmc_approximates_exact_on_eight_players():
    game = saturating_game(Q8)
    exact = exact_shapley(range(8), game)
    res = tmc_shapley(
        range(8), game, permutations=3000, tolerance=0.0, rng=numpy_rng(0, "tmc"), convergence=None
    )
    assert res.permutations == 3000 and res.method == "tmc" and not res.converged
    assert max(abs(res.values[p] - exact[p]) for p in range(8)) < 0.01
    assert res.values[7] == 0.0  # a null player's marginals are all exactly 0
    # without truncation every permutation's marginals telescope: efficiency is exact
    assert sum(res.values.values()) == pytest.approx(game(range(8)) - game(()), abs=1e-12)
    assert spearman([res.values[p] for p in range(8)], [exact[p] for p in range(8)]) > 0.95


def test_tmc_is_seeded():
    game = saturating_game(Q8)
    a = tmc_shapley(range(8), game, 40, 0.01, numpy_rng(3, "shapley"))
    b = tmc_shapley(range(8), game, 40, 0.01, numpy_rng(3, "shapley"))
    assert a == b


def test_truncation_saves_value_calls_and_stays_close():
    q = {i: 0.9 for i in range(3)} | {i: 0.005 for i in range(3, 10)}  # saturates early
    game = saturating_game(q)
    full = tmc_shapley(range(10), game, 100, 0.0, numpy_rng(1, "t"), convergence=None)
    cut = tmc_shapley(range(10), game, 100, 0.02, numpy_rng(1, "t"), convergence=None)
    assert cut.evaluations < 0.75 * full.evaluations
    assert max(abs(cut.values[p] - full.values[p]) for p in range(10)) < 0.03
    # truncated marginals are at most the tolerance short of efficiency
    gap = (game(range(10)) - game(())) - sum(cut.values.values())
    assert 0 <= gap < 0.02


def test_tmc_stops_when_estimates_converge():
    weights = {i: float(i) for i in range(10)}
    additive = lambda s: sum(weights[p] for p in s)  # noqa: E731  every marginal is constant
    res = tmc_shapley(range(10), additive, 500, 0.0, numpy_rng(0, "c"), convergence=0.05, window=5)
    assert res.converged and res.permutations == 6
    assert close(res.values, weights, 1e-9)


def test_shapley_values_picks_exact_then_tmc():
    game = saturating_game(Q8)
    small = shapley_values(range(8), game, rng=numpy_rng(0, "s"))
    assert small.method == "exact" and small.evaluations == 256
    assert close(small.values, exact_shapley(range(8), game))
    big = shapley_values(
        range(8), game, exact_max=7, permutations=30, tolerance=0.01, rng=numpy_rng(0, "s")
    )
    assert big.method == "tmc" and big.permutations <= 30
    with pytest.raises(ConfigError, match="rng"):
        shapley_values(range(9), game, permutations=5)


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"permutations": 0}, "shapley.permutations"),
        ({"permutations": -3}, "shapley.permutations"),
        ({"permutations": 2.5}, "shapley.permutations"),
        ({"tolerance": -0.1}, "shapley.tolerance"),
        ({"tolerance": float("nan")}, "shapley.tolerance"),
        ({"convergence": -1.0}, "shapley.convergence"),
        ({"window": 0}, "shapley.window"),
    ],
)
def test_bad_parameters_are_one_line_config_errors(kwargs, key):
    args = {"permutations": 10, "tolerance": 0.0, **kwargs}
    for call in (
        lambda: tmc_shapley(range(3), len, rng=numpy_rng(0, "x"), **args),
        lambda: shapley_values(range(3), len, rng=numpy_rng(0, "x"), **args),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
            call()
        assert "\n" not in str(err.value)


# -- correlations ---------------------------------------------------------------------------
def test_pearson_and_spearman():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert pearson(x, [2 * v + 1 for v in x]) == pytest.approx(1.0)
    assert pearson(x, [-v for v in x]) == pytest.approx(-1.0)
    y = [0.3, 0.1, 0.9, 0.4, 0.2]
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert spearman(x, [v**3 for v in x]) == pytest.approx(1.0)  # monotone, not linear
    assert list(rankdata([10, 20, 20, 5, 20])) == [2.0, 4.0, 4.0, 1.0, 4.0]
    ties = [1.0, 2.0, 2.0, 3.0]
    assert spearman(ties, [1, 2, 3, 4]) == pytest.approx(
        np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1]
    )
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3])) and math.isnan(spearman([1, 2], [5, 5]))
    assert math.isnan(pearson([1.0], [2.0]))
    with pytest.raises(ValueError):
        pearson([1, 2], [1, 2, 3])


# -- real coalitions ------------------------------------------------------------------------
def make_participants(sizes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for pid, n in enumerate(sizes):
        x = torch.randn(n, 1, 6, generator=gen) + 0.2 * pid
        y = (x.sum(dim=(1, 2)) > 0).long()
        out.append(ParticipantData(pid, x, y))
    return out


def make_module(seed=0):
    torch.manual_seed(seed)
    return ClassifierModule(
        MLP((1, 6), 2, hidden=(8,)), functools.partial(torch.optim.SGD, lr=0.2, momentum=0.9)
    )


_g = torch.Generator().manual_seed(5)
_tx = torch.randn(200, 1, 6, generator=_g)
TEST = EvalSet(_tx, (_tx.sum(dim=(1, 2)) > 0).long())


class FreeRiding:
    """The product's hop, except that ``riders`` hand the model back unchanged."""

    def __init__(self, hop, riders):
        self.hop, self.riders = hop, set(riders)
        self.local_epochs = hop.local_epochs

    def __call__(self, model, data, generator, grad_correction=None):
        if data.pid in self.riders:
            return HopStats(samples=len(data), steps=0, train_loss=0.0)
        return self.hop(model, data, generator, grad_correction=grad_correction)


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lineage_full_coalition_reproduces_trained_performance_bit_for_bit():
    parts = make_participants([60, 50, 70, 40, 40])
    hop = FreeRiding(LightningHop(batch_size=8, local_epochs=2), riders={4})
    store = InMemoryModelStore()
    genesis = make_module()
    perf = TrainedPerformance(make_module(), hop, parts, TEST, TEST, store, seed=3, genesis=0)
    # a chain of DeRelayL rounds: (round, parent owner, trainer)
    chain = [(0, 0, 1), (1, 1, 2), (2, 2, 4), (3, 4, 1), (4, 1, 3)]
    for rnd, parent, trainer in chain:
        perf.train(rnd, np.array([parent]), np.array([trainer]), numpy_rng(0, "unused"))
    final = store.get(perf.own[3])
    lineage = [(rnd, trainer) for rnd, _, trainer in chain]
    value = LineageCoalitionValue(hop, genesis, lineage, parts, seed=3, test=TEST)
    assert value.players == [1, 2, 4, 3]
    assert same_state(value.replay({1, 2, 3, 4}).state_dict(), final)
    # and a manual replay of a sub-coalition: only 2's and 3's hops, in lineage order
    manual = make_module()
    for rnd, p in [(1, 2), (4, 3)]:
        hop(manual, parts[p], torch_generator(3, "hop", rnd, p))
    assert same_state(value.replay({2, 3}).state_dict(), manual.state_dict())
    assert value({0}) == value(()) == evaluate(genesis, TEST)[1]  # 0 is not on the lineage

    res = shapley_values(value.players, value, rng=numpy_rng(3, "shapley"))
    assert res.method == "exact" and res.evaluations == 16
    assert res.full_value == evaluate(_load(final), TEST)[1]
    assert sum(res.values.values()) == pytest.approx(res.full_value - res.empty_value, abs=1e-12)
    assert res.values[4] == 0.0  # the free-rider's hop changes nothing: a null player
    assert res.full_value > res.empty_value


def test_lineage_replays_resume_from_shared_states_bit_for_bit():
    parts = make_participants([40, 30, 35, 25])
    hop = LightningHop(batch_size=8)
    lineage = [(0, 1), (1, 2), (2, 1), (3, 3), (4, 0), (5, 2)]
    cached = LineageCoalitionValue(hop, make_module(), lineage, parts, seed=4, test=TEST)
    plain = LineageCoalitionValue(
        hop, make_module(), lineage, parts, seed=4, test=TEST, cache_bytes=0
    )
    coalitions = [frozenset(c) for k in range(5) for c in itertools.combinations(range(4), k)]
    for i in np.random.default_rng(0).permutation(len(coalitions)):
        a, b = cached.replay(coalitions[i]), plain.replay(coalitions[i])
        assert same_state(a.state_dict(), b.state_dict()), coalitions[i]
    assert plain.hops == sum(sum(p in c for _, p in lineage) for c in coalitions) == 48
    assert cached.hops < 0.75 * plain.hops and not plain.states


def _load(state):
    model = make_module()
    model.load_state_dict(state)
    return model


def test_relay_coalitions():
    parts = make_participants([30, 20, 25, 15])
    hop = FreeRiding(LightningHop(batch_size=8), riders={3})
    for schedule in (RingSchedule(), RandomSchedule()):
        runner = RelayRunner(hop, schedule, rounds=2, seed=1)
        value = RelayCoalitionValue(runner, make_module(), parts, TEST)
        original = runner.run(make_module(), parts, TEST, TEST)
        assert value({0, 1, 2, 3}) == original.test_acc
        assert value(()) == evaluate(make_module(), TEST)[1]
        res = shapley_values(value.players, value)
        assert res.method == "exact"
        assert sum(res.values.values()) == pytest.approx(
            res.full_value - res.empty_value, abs=1e-12
        )
        assert res.values[3] == 0.0
    # a singleton coalition is the participant's own hops, with its own streams
    runner = RelayRunner(LightningHop(batch_size=8), RingSchedule(), rounds=2, seed=1)
    alone = make_module()
    for rnd in (1, 2):
        LightningHop(batch_size=8)(alone, parts[2], torch_generator(1, "hop", rnd, 2))
    assert RelayCoalitionValue(runner, make_module(), parts, TEST)({2}) == evaluate(alone, TEST)[1]


class StreamRecorder:
    def __init__(self, hop):
        self.hop, self.local_epochs, self.seen = hop, hop.local_epochs, []

    def __call__(self, model, data, generator, grad_correction=None):
        self.seen.append((data.pid, generator.initial_seed()))
        return self.hop(model, data, generator, grad_correction=grad_correction)


def test_federated_coalitions_keep_each_clients_stream():
    parts = make_participants([30, 20, 25, 15])
    rec = StreamRecorder(LightningHop(batch_size=8))
    runner = FederatedRunner(rec, FedAvg(), seed=2, clients_per_round=4, rounds=2)
    original = runner.run(make_module(), parts, TEST, TEST)
    value = FederatedCoalitionValue(runner, make_module(), parts, TEST)
    assert value({0, 1, 2, 3}) == original.metrics["test_acc"]
    rec.seen.clear()
    value({1, 3})
    assert rec.seen == [
        (p, torch_generator(2, "hop", rnd, p).initial_seed()) for rnd in (1, 2) for p in (1, 3)
    ]
    res = shapley_values(value.players, value)
    assert sum(res.values.values()) == pytest.approx(res.full_value - res.empty_value, abs=1e-12)
    assert value.clients_per_round(3) == 3
    partial = FederatedRunner(rec, FedAvg(), seed=2, clients_per_round=2, rounds=2)
    assert FederatedCoalitionValue(partial, make_module(), parts, TEST).clients_per_round(1) == 1
    frac = FederatedCoalitionValue(partial, make_module(), parts, TEST, client_fraction=0.5)
    assert frac.clients_per_round(3) == 2


@pytest.mark.parametrize(
    "algorithm",
    [
        ["algorithm=relay", "algorithm.rounds=1"],
        ["algorithm=fedavg", "algorithm.clients_per_round=2"],
    ],
)
def test_relay_and_fl_runs_report_participants_shapley_values(make_cfg, tmp_path, algorithm):
    import json

    from derelayl.app.pipeline import run_experiment

    out = tmp_path / "run"
    metrics = run_experiment(
        make_cfg(*algorithm, "num_participants=4", "tracking=none", "shapley.enabled=true"), out
    )
    assert metrics["shapley_method"] == "exact" and metrics["shapley_players"] == 4
    saved = json.loads((out / "shapley.json").read_text())
    # efficiency: the values add up to U(all) - U(none), U(all) being the run's own accuracy
    assert sum(saved["values"].values()) == pytest.approx(
        saved["full_value"] - saved["empty_value"]
    )
    assert saved["full_value"] == pytest.approx(metrics["test_acc"])


@pytest.mark.parametrize(
    "strategy, schedule",
    [
        ("fedavg", {"rounds": 3}),
        ("fedprox", {"rounds": 2}),
        ("scaffold", {"rounds": 2}),
        # a sample budget: coalitions of different sizes end after different rounds
        ("fedavg", {"rounds": None, "sample_budget": 150}),
    ],
)
def test_federated_coalitions_in_lockstep_equal_their_runs_one_by_one(strategy, schedule):
    """``many``: a batch of coalitions' FL runs in lockstep, every round's training clients of
    every run as one batched computation, gives each coalition the value of its own run (with
    adversaries: a free rider, a dropout and a noise adversary keep their behaviour)."""
    from derelayl.algorithms.fl.strategies import FedProx, Scaffold
    from derelayl.learning.batched import BatchedHop
    from derelayl.protocol.behaviours import DROPOUT, FREE_RIDER, HONEST, NOISE
    from derelayl.valuation.shapley import _all_coalitions

    parts = make_participants([30, 20, 25, 15, 35, 12])
    make = {
        "fedavg": FedAvg,
        "fedprox": lambda: FedProx(mu=0.1),
        "scaffold": lambda: Scaffold(local_lr=0.2),
    }[strategy]
    behaviour = {0: HONEST, 1: FREE_RIDER, 2: HONEST, 3: DROPOUT, 4: NOISE, 5: HONEST}
    runner = FederatedRunner(
        LightningHop(batch_size=8), make(), seed=2, clients_per_round=3, **schedule
    )
    kwargs = dict(client_fraction=0.5, behaviour=behaviour, noise_std=0.5)
    one = FederatedCoalitionValue(runner, make_module(), parts, TEST, **kwargs)
    many = FederatedCoalitionValue(
        runner, make_module(), parts, TEST, batched=BatchedHop(batch_size=8), max_batch=20, **kwargs
    )
    coalitions = _all_coalitions(one.players)
    assert len(coalitions) == 64
    assert many.many(coalitions) == pytest.approx([one(c) for c in coalitions], abs=1e-9)


def test_a_federated_run_to_a_budget_whose_clients_never_train_ends():
    """Regression: a run to a sample budget with only free riders (a Shapley coalition of them)
    never reached its budget and looped forever; it ends after IDLE_ROUNDS_TO_STOP idle rounds."""
    from derelayl.algorithms.fl.runner import IDLE_ROUNDS_TO_STOP, FederatedPopulation
    from derelayl.protocol.behaviours import FREE_RIDER

    parts = make_participants([30, 20])
    runner = FederatedRunner(
        LightningHop(batch_size=8),
        FedAvg(),
        seed=2,
        clients_per_round=2,
        rounds=None,
        sample_budget=100,
        population=FederatedPopulation(behaviour=np.array([FREE_RIDER, FREE_RIDER], np.int8)),
    )
    result = runner.run(make_module(), parts, TEST, TEST)
    assert result.rounds == IDLE_ROUNDS_TO_STOP and result.samples_seen == 0


@pytest.mark.parametrize("schedule", [RingSchedule(), RandomSchedule()])
def test_relay_coalitions_in_lockstep_equal_their_runs_one_by_one(schedule):
    """``many``: the relay's hop sequence replayed for a batch of coalitions in lockstep gives
    each coalition its own relay run's value (the full coalition: the original run's)."""
    from derelayl.learning.batched import BatchedHop
    from derelayl.valuation.shapley import _all_coalitions

    parts = make_participants([30, 20, 25, 15, 22])
    runner = RelayRunner(LightningHop(batch_size=8), schedule, rounds=2, seed=1)
    one = RelayCoalitionValue(runner, make_module(), parts, TEST)
    many = RelayCoalitionValue(runner, make_module(), parts, TEST, batched=BatchedHop(batch_size=8))
    assert len(many.hop_sequence()) == 2 * len(parts)
    coalitions = _all_coalitions(one.players)
    values = many.many(coalitions)
    assert values == pytest.approx([one(c) for c in coalitions], abs=1e-9)
    assert values[-1] == pytest.approx(runner.run(make_module(), parts, TEST, TEST).test_acc)


def test_lockstep_replays_discard_a_diverged_hop_as_the_relay_does():
    from derelayl.valuation.coalitions import _discard_diverged

    # model 0 diverged in its first tensor, model 2 in its second: both get their weights back
    now = [
        torch.tensor([[1.0, float("nan")], [2.0, 3.0], [4.0, 5.0]]),
        torch.tensor([[1.0], [6.0], [float("inf")]]),
    ]
    before = [torch.zeros(3, 2), torch.zeros(3, 1)]
    _discard_diverged(now, before)
    assert now[0].tolist() == [[0.0, 0.0], [2.0, 3.0], [0.0, 0.0]]
    assert now[1].tolist() == [[0.0], [6.0], [0.0]]
