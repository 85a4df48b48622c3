"""Components belong to the algorithms that use them: DeRelayL composes its incentive, the relay
its schedule; the FL baselines pay (and evaluate every client model) only when asked to. Every
component is built from its `_target_`, and each default has one source: the component's
signature (or the core's parameter record) that its structured schema is made from."""

import inspect
import json

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_method
from omegaconf import OmegaConf

from conftest import tmp_overrides
from derelayl.app.pipeline import run_experiment
from derelayl.cli.train import config_dir


@pytest.mark.parametrize(
    "overrides, incentive, schedule",
    [
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
    ],
)
def test_each_algorithm_composes_only_its_own_components(tmp_path, overrides, incentive, schedule):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(
            "train", overrides=tmp_overrides(tmp_path) + overrides, return_hydra_config=True
        )
    chosen = cfg.hydra.runtime.choices
    assert chosen.get("incentive") == incentive and chosen.get("schedule") == schedule
    assert (cfg.incentive is None) == (incentive is None)
    assert (cfg.schedule is None) == (schedule is None)


GROUPS = ("dataset", "partition", "model", "schedule", "incentive", "algorithm")


def _options(group):
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_component_is_built_from_its_target(make_cfg, group, option):
    """No `name` keys and no registry: each option's node (and the algorithm's runner and
    strategy) instantiates from `_target_`; a `_target_` resolves to an importable callable."""
    cfg = make_cfg(f"{group}={option}")
    node = cfg[group] if group != "algorithm" else cfg.algorithm.runner
    assert "name" not in cfg[group]
    assert callable(get_method(node._target_)) or inspect.isclass(get_method(node._target_))
    if group == "algorithm" and "strategy" in cfg.algorithm:
        get_method(cfg.algorithm.strategy._target_)


def test_a_components_defaults_are_its_signatures(make_cfg):
    """One source per default: the composed node holds the constructor's own defaults (the
    feature-noise sigma was 0.1 in code and 0.5 in YAML before the schemas)."""
    from derelayl.data.partition import DirichletPartitioner, FeatureNoisePartitioner
    from derelayl.protocol.incentives import BoundedRoyalty
    from derelayl.protocol.params import DeRelayLParams
    from derelayl.sim.devices import DeviceProfile

    def defaults(target):
        return {
            k: p.default
            for k, p in inspect.signature(target).parameters.items()
            if p.default is not inspect.Parameter.empty
        }

    cfg = make_cfg("partition=feature_noise", "incentive=derelayl_bounded")
    assert cfg.partition.sigma == defaults(FeatureNoisePartitioner)["sigma"] == 0.5
    assert OmegaConf.to_container(cfg.incentive) == {
        "_target_": "derelayl.protocol.incentives.BoundedRoyalty",
        **defaults(BoundedRoyalty),
    }
    devices = OmegaConf.to_container(cfg.participants.devices)
    devices.pop("_target_")
    assert devices == defaults(DeviceProfile)
    assert cfg.derelayl.rounds == DeRelayLParams().rounds == 30
    assert make_cfg("partition=dirichlet_0.1").partition.alpha == 0.1
    assert make_cfg().partition.alpha == defaults(DirichletPartitioner)["alpha"]


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
