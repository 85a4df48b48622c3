"""Components belong to the algorithms that use them: DeRelayL composes its incentive, the relay
its schedule; the FL baselines pay (and evaluate every client model) only when asked to."""

import json

import pytest

from derelayl.app.pipeline import run_experiment


@pytest.mark.parametrize("overrides, incentive, schedule", [
    ([], "derelayl", None),
    (["algorithm=relay"], None, "ring"),
    (["algorithm=relay", "schedule=random"], None, "random"),
    (["algorithm=fedavg"], None, None),
    (["algorithm=fedprox"], None, None),
    (["algorithm=scaffold"], None, None),
    (["algorithm=local"], None, None),
    (["algorithm=fedavg", "incentive=uniform"], "uniform", None),
    (["algorithm=scaffold", "incentive=derelayl"], "derelayl", None),
    (["incentive=marginal_gain"], "marginal_gain", None),
    (["experiment=mnist1d_shards"], None, "random"),
])
def test_each_algorithm_composes_only_its_own_components(make_cfg, overrides, incentive, schedule):
    cfg = make_cfg(*overrides)
    assert (cfg.get("incentive") or {}).get("name") == incentive
    assert (cfg.get("schedule") or {}).get("name") == schedule


def test_fedavg_pays_only_when_an_incentive_is_asked_for(make_cfg, tmp_path):
    base = ("algorithm=fedavg", "tracking=none", "num_participants=6", "algorithm.rounds=2")
    plain = run_experiment(make_cfg(*base), tmp_path / "plain")
    assert "coins_total" not in plain and "incentive" not in plain
    assert not (tmp_path / "plain/participation.json").exists()
    paid = run_experiment(make_cfg(*base, "incentive=uniform"), tmp_path / "paid")
    assert paid["incentive"] == "uniform" and paid["coins_total"] > 0
    rounds = json.loads((tmp_path / "paid/participation.json").read_text())["rounds"]
    # paying evaluates every returned client model (its gain) ...
    assert all(len(r["gains"]) == len(r["clients"]) > 0 for r in rounds)
    # ... which changes nothing in training: the same numbers as the unpaid run
    for key in ("test_acc", "val_acc", "samples_seen", "bytes"):
        assert paid[key] == plain[key], key


def test_derelayl_train_returns_the_optimized_metric_a_validation_metric(make_cfg, tmp_path):
    """What a sweeper maximises is `optimized_metric` (val_acc by default), not test_acc."""
    from derelayl.cli.train import optimized_value

    cfg = make_cfg("algorithm=relay", "tracking=none", "num_participants=5", "algorithm.rounds=1")
    assert cfg.optimized_metric == "val_acc"
    metrics = run_experiment(cfg, tmp_path / "run")
    assert optimized_value(cfg, metrics) == metrics["val_acc"] != metrics["test_acc"]
    other = make_cfg("algorithm=relay", "optimized_metric=best_val_acc")
    assert optimized_value(other, metrics) == metrics["best_val_acc"]
    rw = make_cfg("derelayl.performance=random_walk")  # no validation split: None, with a warning
    assert optimized_value(rw, {"best_quality": 0.9, "test_acc": None}) is None
