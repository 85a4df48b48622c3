"""The paper's study presets (conf/experiment/paper_*.yaml): each composes with its hydra node,
each sweep resolves to the intended jobs (composed, not run), and a tiny study runs end to end
under one MLflow parent run with the project's default, launch-directory store."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from derelayl.cli.train import config_dir
from derelayl.reporting.study import RunRecord, filter_runs, group_runs
from derelayl.io.sweep import count_jobs

# paper_scale is one run at the authors' N, not one of the paper's studies (its own folder per
# run, no sweep): tests/test_paper_scale.py
PRESETS = sorted(p.stem for p in (config_dir() / "experiment").glob("paper_*.yaml")
                 if p.stem != "paper_scale")
SWEEPS = {  # preset -> (MLflow experiment, number of jobs)
    "paper_efficacy": ("paper_efficacy", 7 * 4 * 3),
    "paper_sustainability": ("paper_sustainability", 5 * 3),
    "paper_fairness": ("paper_fairness", 5 * 3),
    "paper_robustness": ("paper_robustness", 6 * 3),
}
SINGLE = {"paper_economy_coins": "authors_coins", "paper_economy_versions": "authors_versions"}
INCENTIVES = {"derelayl", "derelayl_bounded", "uniform", "data_size", "marginal_gain"}
ADVERSARIES = ("dropout", "free_rider", "label_flip", "noise", "sybil")


# what resolves only inside a Hydra job (the launch directory), fixed for composing outside one
OUTSIDE_A_JOB = ["data_dir=/study/data", "tracking.uri=sqlite:////study/mlflow.db",
                 "tracking.artifact_location=/study/mlartifacts"]


def _compose(*overrides: str, hydra: bool = True):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=OUTSIDE_A_JOB + list(overrides),
                       return_hydra_config=hydra)


def _jobs(preset: str) -> list[list[str]]:
    """The override lists of the jobs the basic sweeper would launch for ``preset``."""
    cfg = _compose(f"experiment={preset}")
    args = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]  # as BasicSweeper does
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)
    return [job for batch in batches for job in batch]


def _job_configs(preset: str, seeds: bool = False):
    """(overrides, composed config) per job; seed 0 only unless ``seeds``: seeds change no
    config value but ``seed``, and composing 84 configs takes half a minute."""
    for job in _jobs(preset):
        if seeds or "seed=0" in job:
            cfg = _compose(f"experiment={preset}", *job, hydra=False)
            yield job, OmegaConf.to_container(cfg, resolve=True)


def test_every_study_has_a_preset():
    assert set(PRESETS) == set(SWEEPS) | set(SINGLE)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_with_its_hydra_node(preset):
    cfg = _compose(f"experiment={preset}")
    if preset in SWEEPS:
        experiment, total = SWEEPS[preset]
        assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"  # derelayl-train experiment=... sweeps
        assert cfg.hydra.sweep.dir == f"outputs/paper/{preset.removeprefix('paper_')}"
        assert count_jobs(cfg) == total == len(_jobs(preset))  # the progress lines' total
        assert sorted({j[-1] for j in _jobs(preset)}) == ["seed=0", "seed=1", "seed=2"]
    else:
        experiment = "paper_economy"
        assert cfg.hydra.mode is None  # a single run
        assert cfg.hydra.run.dir == f"outputs/paper/{preset.removeprefix('paper_')}"
    assert cfg.tracking.experiment == experiment
    # every interpolation of the job's config resolves
    OmegaConf.to_container(_compose(f"experiment={preset}", hydra=False), resolve=True)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_on_the_command_line(cli, preset):
    proc = cli(f"experiment={preset}", "--cfg=job", "--resolve")
    assert proc.returncode == 0, proc.stderr
    assert "tracking:" in proc.stdout and "experiment: paper_" in proc.stdout


@pytest.mark.parametrize("preset, authors", SINGLE.items())
def test_economy_presets_are_the_authors_figures(preset, authors):
    ours = OmegaConf.to_container(_compose(f"experiment={preset}", hydra=False), resolve=True)
    theirs = OmegaConf.to_container(_compose(f"experiment={authors}", hydra=False), resolve=True)
    assert ours.pop("tracking")["experiment"] == "paper_economy"
    theirs.pop("tracking")
    assert ours == theirs
    assert ours["derelayl"]["performance"] == "random_walk" and ours["num_participants"] == 256


def test_efficacy_sweep_is_methods_x_partitions_x_seeds():
    seen = set()
    for job, cfg in _job_configs("paper_efficacy"):
        algo, part = cfg["algorithm"], cfg["partition"]
        split = {"iid": "iid", "shards": f"shards{part.get('classes_per_participant')}",
                 "dirichlet": f"dirichlet{part.get('alpha')}"}[part["name"]]
        seen.add((algo["name"], split))
        assert cfg["tracking"]["experiment"] == "paper_efficacy"
        # about equal computation: 30 epochs of the training set for everybody
        if algo["name"] == "relay":
            assert algo["rounds"] == 30 and algo["local_epochs"] == 1
        elif algo["name"] == "derelayl":
            assert cfg["derelayl"]["rounds"] == 30 and cfg["derelayl"]["performance"] == "trained"
        else:
            assert algo["rounds"] is None and algo["budget_epochs"] == 30
            assert algo.get("sample_budget") is None
    methods = ("derelayl", "relay", "fedavg", "fedprox", "scaffold", "local", "centralized")
    splits = ("iid", "dirichlet0.5", "dirichlet0.1", "shards2")
    assert seen == set(itertools.product(methods, splits))


@pytest.mark.parametrize("preset", ["paper_sustainability", "paper_fairness"])
def test_incentive_sweeps(preset):
    seen = set()
    for job, cfg in _job_configs(preset):
        seen.add(cfg["incentive"]["name"])
        assert cfg["algorithm"]["name"] == "derelayl"
        assert cfg["derelayl"]["performance"] == "trained"
        if preset == "paper_sustainability":
            assert cfg["churn"]["enabled"] and cfg["derelayl"]["rounds"] == 60
            assert cfg["participants"]["behaviour"]["free_rider"] == 0.2
            assert not cfg["shapley"]["enabled"]
        else:
            assert cfg["shapley"]["enabled"] and not cfg["churn"]["enabled"]
            assert set(cfg["participants"]["behaviour"].values()) == {0.0}
    assert seen == INCENTIVES


def test_robustness_sweep_is_each_adversary_at_30_percent_and_all_honest():
    seen = {}
    for job, cfg in _job_configs("paper_robustness"):
        behaviour = cfg["participants"]["behaviour"]
        seen[cfg["paper"]["adversary"]] = {k: v for k, v in behaviour.items() if v}
        assert cfg["algorithm"]["name"] == "derelayl" and cfg["incentive"]["name"] == "derelayl"
    assert seen == {"none": {}, **{kind: {kind: 0.3} for kind in ADVERSARIES}}


def test_report_labels_leave_out_what_the_grouping_already_says():
    """Params that the groups so far determine (a partition's _target_ and other keys, the
    behaviour fractions a robustness preset sets) do not lengthen the labels; --where picks."""
    def run(i, algo, partition, alpha, adversary):
        params = {"algorithm.name": algo, "partition._target_": f"P.{partition}",
                  "partition.min_samples": "10" if partition == "dirichlet" else None,
                  "partition.alpha": alpha, "paper.adversary": adversary,
                  "participants.behaviour.noise": "0.3" if adversary == "noise" else "0.0"}
        tags = {"algorithm": algo, "partition": partition, "seed": str(i)}
        return RunRecord(f"r{i}", "r", tags, {k: v for k, v in params.items() if v}, {})

    runs = [run(s, a, p, al, adv) for s in (0, 1) for a in ("derelayl", "fedavg")
            for p, al in (("iid", None), ("dirichlet", "0.5"), ("dirichlet", "0.1"))
            for adv in ("none", "noise")]
    labels = set(group_runs(runs))
    assert "fedavg, partition=dirichlet, paper.adversary=noise, partition.alpha=0.1" in labels
    assert "derelayl, partition=iid, paper.adversary=none" in labels
    assert len(labels) == 12
    iid = filter_runs(runs, ["partition=iid", "paper.adversary=noise"])
    assert len(iid) == 4 and set(group_runs(iid)) == {"derelayl", "fedavg"}
    assert len(filter_runs(runs, ["partition.alpha=0.10"])) == 8  # numbers compare as numbers


def test_a_tiny_study_runs_under_one_parent_run_in_the_default_store(tmp_path):
    """The preset as users launch it, shrunk: no tracking.uri given, so the sweep callback must
    resolve the default sqlite:///${hydra:runtime.cwd}/mlflow.db in the launching process."""
    from mlflow.tracking import MlflowClient

    from derelayl.cli.report import main as report_main

    # command-line sweeps replace the preset's for the same key: 2 adversaries x 1 seed
    cmd = [sys.executable, "-m", "derelayl.cli.train", "experiment=paper_robustness",
           "paper_adversary=none,free_rider", "seed=0", "derelayl.rounds=3",
           "num_participants=10", "progress_every=100"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env=dict(os.environ, HYDRA_FULL_ERROR="0"))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "raised" not in log  # no callback failed
    assert "sweep progress: 2/2 jobs done" in log
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("paper_robustness")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("derelayl.sweep") == "parent"]
    assert len(parents) == 1 and len(runs) == 3
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 2
    assert (tmp_path / "outputs/paper/robustness/1/metrics.json").is_file()

    out = tmp_path / "report"
    report_main(["--experiment", "paper_robustness", "--tracking-uri",
                 f"sqlite:///{tmp_path}/mlflow.db", "--out", str(out)])
    md = (out / "report.md").read_text()
    assert "| derelayl, paper.adversary=free_rider | 1 | 0 |" in md
    assert "| derelayl, paper.adversary=none | 1 | 0 |" in md
    assert (out / "figures" / "robustness.png").is_file()
    # DeRelayL's accuracy curve is its best model so far (best_test_acc)
    assert (out / "figures" / "accuracy_vs_rounds.png").is_file()
    assert (out / "figures" / "accuracy_vs_bytes.png").is_file()

    report_main(["--experiment", "paper_robustness", "--tracking-uri",
                 f"sqlite:///{tmp_path}/mlflow.db", "--out", str(tmp_path / "honest"),
                 "--where", "paper.adversary=none"])
    md = (tmp_path / "honest" / "report.md").read_text()
    assert "1 finished runs in 1 groups" in md and "where paper.adversary=none" in md
    with pytest.raises(SystemExit) as exc:
        report_main(["--experiment", "paper_robustness", "--tracking-uri",
                     f"sqlite:///{tmp_path}/mlflow.db", "--where", "paper.adversary=sybil"])
    assert exc.value.code == 2
