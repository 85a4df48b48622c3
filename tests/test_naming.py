"""MLflow runs are named by what they are; a sweep's parent by its study and what it varies."""

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from conftest import tmp_overrides
from derelayl.app import naming
from derelayl.cli.train import config_dir

GROUPS = sorted(p.name for p in config_dir().iterdir() if p.is_dir())


@pytest.mark.parametrize(
    "overrides, name",
    [
        ([], "derelayl dirichlet(0.5) seed=0"),
        (
            [
                "algorithm=relay",
                "algorithm.rounds=1",
                "num_participants=20",
                "seed=3",
                "algorithm.optimizer.lr=0.01",
                "partition.alpha=0.1",
                "progress_every=9",
            ],
            "relay dirichlet(0.1) algorithm.rounds=1 algorithm.optimizer.lr=0.01 seed=3",
        ),
        (
            ["algorithm=fedavg", "incentive=uniform", "partition=shards", "dataset=mnist1d"],
            "fedavg mnist1d shards(2) incentive=uniform seed=0",
        ),
        (["experiment=authors_coins"], "derelayl(random_walk) experiment=authors_coins seed=0"),
        (["algorithm=fedavg", "partition=iid", "algorithm.budget_epochs=5"], "fedavg iid seed=0"),
        (
            ["partition=dirichlet_0.1", "adversary=noise"],
            "derelayl dirichlet(0.1) adversary=noise seed=0",
        ),
    ],
)
def test_run_names_say_what_a_run_is(tmp_path, overrides, name):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=tmp_overrides(tmp_path) + overrides,
            return_hydra_config=True,
        )

        def base(choices):
            return compose(config_name="train", overrides=tmp_overrides(tmp_path) + list(choices))

        chosen = naming.choices(cfg)  # Hydra's runtime choices: what the run is
        assert chosen["algorithm"] == name.split(" ")[0].split("(")[0]
        assert (
            naming.run_name(cfg, naming.varied(overrides, cfg, base, GROUPS), chosen=chosen) == name
        )


def test_sweep_axes_tags_and_names():
    axes = naming.sweep_axes(
        {"incentive": "derelayl,uniform", "seed": "0,1,2"},
        ["study=fairness", "seed=0", "algorithm=fedavg,scaffold"],
    )
    assert axes == {"incentive": "derelayl,uniform", "algorithm": "fedavg,scaffold"}
    assert (
        naming.sweep_name("fairness", axes, 4)
        == "fairness: incentive=derelayl,uniform x algorithm=fedavg,scaffold (4 jobs)"
    )
    assert (
        naming.sweep_name(
            "relay_lr",
            {"algorithm.optimizer.lr": "tag(log, interval(0.002, 0.2))"},
            20,
            optuna=True,
        )
        == "optuna relay_lr: algorithm.optimizer.lr (20 trials)"
    )
    tags = naming.sweep_tags(
        {"algorithm": "derelayl", "incentive": "derelayl", "dataset": "digits"}, axes
    )
    assert tags["algorithm"] == "fedavg,scaffold" and tags["dataset"] == "digits"
    assert "incentive" in tags and tags["sweep_varies"] == "incentive, algorithm"
    only_algorithms = naming.sweep_tags({"incentive": "derelayl"}, {"algorithm": "fedavg,scaffold"})
    assert "incentive" not in only_algorithms  # each job composes its own (FL: none)


@pytest.mark.slow  # end to end through subprocesses (20 s or more): CI runs it
def test_a_sweeps_runs_are_named_in_mlflow(tiny_study):
    client = MlflowClient(tracking_uri=tiny_study["uri"])
    exp = client.get_experiment_by_name(tiny_study["experiment"])
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("derelayl.sweep") == "parent")
    assert parent.info.run_name == "sweep: seed=0,1 x partition.alpha=0.1,1.0 (4 jobs)"
    assert parent.data.tags["sweep_varies"] == "seed, partition.alpha"
    assert parent.data.tags["algorithm"] == "relay"
    names = sorted(
        r.info.run_name for r in runs if r is not parent and r.info.run_id != parent.info.run_id
    )
    assert names == [
        f"relay dirichlet({a}) num_participants=5 algorithm.rounds=1 seed={s}"
        for a in ("0.1", "1.0")
        for s in (0, 1)
    ]
