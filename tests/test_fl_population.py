"""FL baselines with DeRelayL's populations: adversaries, economics, churn, payouts each round;
and, with none of them, the exact numbers FL gave before populations existed."""

import json

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error
from derelayl.algorithms.fl.runner import FederatedPopulation, FederatedRunner
from derelayl.algorithms.fl.strategies import FedAvg
from derelayl.app.pipeline import run_experiment
from derelayl.data.participants import ParticipantData
from derelayl.learning.hop import LightningHop
from derelayl.protocol.behaviours import (
    DROPOUT,
    FREE_RIDER,
    HONEST,
    LABEL_FLIP,
    NOISE,
    SYBIL,
    adversarial_data,
)
from derelayl.protocol.incentives import FederatedPayouts, UniformReward
from derelayl.protocol.population import ChurnParams, Economics
from derelayl.sim.seeding import torch_generator
from test_fl_core import VAL, make_module, make_participants, same


def fl(parts, behaviour=None, *, rounds=1, clients=None, **kw):
    population = (
        None
        if behaviour is None
        else FederatedPopulation(
            behaviour=np.array(behaviour, dtype=np.int8), **kw.pop("population", {})
        )
    )
    runner = FederatedRunner(
        LightningHop(batch_size=4),
        FedAvg(),
        seed=0,
        clients_per_round=clients or len(parts),
        rounds=rounds,
        population=population,
        **kw,
    )
    return runner.run(make_module(), parts, VAL, VAL)


# -- off by default: bit-identical to FL before populations --------------------------------------
# numbers computed on the code before this feature (commit 92edd0b), same configs and seeds
BEFORE = {
    (
        "algorithm=fedavg",
        "algorithm.rounds=4",
        "algorithm.clients_per_round=3",
        "incentive=uniform",
        "seed=3",
    ): dict(
        test_acc=0.9296296296296296,
        val_acc=0.9037037037037037,
        samples_seen=9310,
        coins_total=12.0,
        coins_minted=12.0,
        coins_gini=0.22916666666666666,
        coins_jain=0.8181818181818182,
        bytes=922560,
    ),
    (
        "algorithm=scaffold",
        "algorithm.rounds=3",
        "algorithm.clients_per_round=4",
        "incentive=derelayl",
        "seed=2",
    ): dict(
        test_acc=0.837037037037037,
        val_acc=0.837037037037037,
        samples_seen=9060,
        coins_total=12.0,
        coins_minted=12.0,
        coins_gini=0.4166666666666667,
        coins_jain=0.6428571428571429,
        bytes=1845120,
    ),
}


@pytest.mark.parametrize("overrides", list(BEFORE))
def test_without_churn_or_adversaries_fl_gives_the_same_numbers_as_before(
    make_cfg, tmp_path, overrides
):
    metrics = run_experiment(make_cfg("tracking=none", "debug=fast", *overrides), tmp_path / "r")
    assert {k: metrics[k] for k in BEFORE[overrides]} == BEFORE[overrides]
    assert "retention" not in metrics and not (tmp_path / "r/participants.csv").exists()


# -- adversaries ---------------------------------------------------------------------------------
def test_a_free_riders_update_is_the_global_model_and_dilutes_the_mean():
    parts = make_participants([6, 10])
    honest_alone = fl(parts[:1]).model  # one client, full participation: its local model
    w0 = make_module()
    result = fl(parts, [HONEST, FREE_RIDER])
    for got, local, start in zip(
        result.model.state_dict().values(),
        honest_alone.state_dict().values(),
        w0.state_dict().values(),
    ):
        torch.testing.assert_close(got, (6 * local + 10 * start) / 16, rtol=0, atol=1e-6)
    assert result.participation == (((0,), ()),)  # aggregated, never paid
    assert result.hops == 1 and result.samples_seen == 6
    assert result.population.matches.tolist() == [1, 1]


def test_a_dropout_downloads_but_is_left_out_of_the_aggregate():
    parts = make_participants([6, 10])
    alone, result = fl(parts[:1]), fl(parts, [HONEST, DROPOUT])
    assert same(result.model, alone.model)
    assert result.bytes == alone.bytes * 3 // 2  # the dropout's download only
    assert result.participation == (((0,), ()),) and result.samples_seen == 6


def test_a_noise_adversary_returns_the_global_weights_plus_gaussian_noise():
    parts = make_participants([6])
    result = fl(parts, [NOISE], population={"noise_std": 0.5})
    gen = torch_generator(0, "noise", 1, 0)
    for got, start in zip(result.model.state_dict().values(), make_module().state_dict().values()):
        torch.testing.assert_close(
            got, start + 0.5 * torch.randn(start.shape, generator=gen), rtol=0, atol=0
        )
    assert result.hops == 0 and result.participation == (((0,), ()),)


def test_label_flippers_train_on_mirrored_labels_and_sybils_share_one_actors_data():
    parts = [
        ParticipantData(i, torch.full((3, 2), float(i)), torch.tensor([0, 1, 9])) for i in range(4)
    ]
    out = adversarial_data(parts, np.array([HONEST, LABEL_FLIP, SYBIL, SYBIL]), num_classes=10)
    assert out[0] is parts[0]
    assert out[1].y.tolist() == [9, 8, 0] and torch.equal(out[1].x, parts[1].x)
    assert out[3].pid == 3 and torch.equal(out[3].x, parts[2].x)


# -- economics, churn, books -------------------------------------------------------------------
def test_churn_moves_people_selects_only_the_active_and_balances_the_books():
    n, initial = 12, 6
    parts = make_participants([8] * n)
    ones = np.ones(n)
    # participants 0-2 want more than anybody gets: they leave once the window is full
    reservation = np.where(np.arange(n) < 3, 10.0, -10.0)
    economics = Economics(
        cost_per_sample=1e-4 * ones,
        cost_per_transfer=5e-3 * ones,
        model_value=5 * ones,
        reservation=reservation,
    )
    payouts = FederatedPayouts(UniformReward(1.0), [len(p) for p in parts])
    result = fl(
        parts,
        [HONEST] * n,
        rounds=8,
        clients=2,
        client_fraction=0.5,
        payouts=payouts,
        population={
            "economics": economics,
            "initial_active": initial,
            "churn": ChurnParams(enabled=True, window=2, join_rate=0.5, join_scale=0.01),
        },
    )
    rows = [r.metrics for r in result.history]
    assert sum(r["left"] for r in rows) >= 3 and sum(r["joined"] for r in rows) >= 1
    people = result.population
    assert not people.active[:3].any() and people.ever_active[initial:].any()
    first_join = next(i for i, r in enumerate(rows) if r["joined"])
    for rnd, (clients, _) in enumerate(result.participation):
        assert rnd > first_join or all(c < initial for c in clients)
        assert (
            len(clients) == max(round(0.5 * rows[rnd - 1]["active_participants"]), 1)
            if rnd
            else len(clients) == 3
        )
    assert (
        payouts.coins.sum() == pytest.approx(payouts.minted) == sum(r["coins_minted"] for r in rows)
    )
    assert rows[-1]["coins_issued_total"] == payouts.minted
    assert rows[-1]["retention"] == people.active[:initial].mean()
    assert people.matches.sum() == sum(r["clients"] for r in rows)
    assert np.all(people.utility[~people.ever_active] == 0)


def test_fedavg_population_through_the_entry_point(make_cfg, tmp_path):
    out = tmp_path / "run"
    metrics = run_experiment(
        make_cfg(
            "tracking=none",
            "debug=fast",
            "algorithm=fedavg",
            "algorithm.rounds=6",
            "algorithm.client_fraction=0.25",
            "churn.enabled=true",
            "churn.window=2",
            "participants.behaviour.free_rider=0.25",
            "participants.behaviour.dropout=0.125",
            "incentive=uniform",
            "shapley.enabled=true",
            "shapley.permutations=2",
        ),
        out,
    )
    # DeRelayL's names
    for key in (
        "retention",
        "active_participants",
        "utility_positive_share",
        "coins_gini",
        "coins_jain",
        "coins_minted",
        "coins_total",
        "coins_burned",
        "adversary_coin_share",
        "adversary_population_share",
        "free_rider_matches",
        "dropout_matches",
        "free_rider_coin_share",
        "coins_shapley_spearman",
    ):
        assert metrics[key] is not None, key
    assert metrics["coins_total"] == metrics["coins_minted"] and metrics["coins_burned"] == 0
    assert metrics["free_rider_coin_share"] == 0 and metrics["dropout_coin_share"] == 0
    assert metrics["adversary_population_share"] > 0
    rows = (out / "participants.csv").read_text().splitlines()
    assert rows[0] == "participant,behaviour,active,coins,utility,matches"
    shapley = json.loads((out / "shapley.json").read_text())
    assert metrics["shapley_players"] == len(rows) - 1 == len(shapley["values"])
    history = (out / "history.csv").read_text().splitlines()[0].split(",")
    assert {"active_participants", "joined", "left", "retention"} <= set(history)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["participants.behaviour.free_rider=1.5"],
            "participants.behaviour.free_rider must be in [0, 1]",
        ),
        (["+participants.behaviour.traitor=0.1"], "unknown participants.behaviour 'traitor'"),
        (["churn.enabled=true", "churn.window=0"], "churn.window must be >= 1"),
    ],
)
def test_bad_fl_population_input_is_one_clear_line(cli_in_process, tmp_path, args, message):
    code, out, err = cli_in_process(
        "algorithm=fedavg", *args, "tracking=none", f"hydra.run.dir={tmp_path}/bad"
    )
    assert_one_line_error(code, err, message)


def test_a_round_with_nobody_paid_settles_to_nothing_under_every_scheme():
    from conftest import make_incentive
    from derelayl.protocol.incentives import INCENTIVES

    for name in INCENTIVES:
        payouts = FederatedPayouts(make_incentive(name), [5, 7])
        assert payouts.settle([], []).sum() == 0 and payouts.minted == 0, name
        payouts.settle([0], [0.1])
        payouts.settle([], [])  # e.g. both selected clients were free-riders
        assert payouts.coins.sum() == pytest.approx(payouts.minted), name
