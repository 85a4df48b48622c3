"""The paper's studies (conf/study/*.yaml): each composes with its hydra node, each sweep resolves
to the intended jobs (composed, not run), and each runs end to end shrunk to a few tiny jobs,
under one MLflow parent run in the project's default, launch-directory store, with
derelayl-report writing the Markdown table the docs include (docs/results/<study>.md)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from derelayl.cli.train import config_dir
from derelayl.io.sweep import count_jobs

STUDIES = sorted(p.stem for p in (config_dir() / "study").glob("*.yaml"))
SWEEPS = {  # study -> (MLflow experiment, folder under outputs/paper, number of jobs)
    "efficacy": ("paper_efficacy", "efficacy", 9 * 4 * 3),
    "sustainability": ("paper_sustainability", "sustainability", 2 * 5 * 3),
    "fairness": ("paper_fairness", "fairness", 5 * 3),
    "robustness": ("paper_robustness", "robustness/derelayl", 3 * 6 * 3),
    "robustness_fedavg": ("paper_robustness", "robustness/fedavg", 3 * 6 * 3),
    "economy": ("paper_economy", "economy", 2),
}
INCENTIVES = {"derelayl", "derelayl_bounded", "uniform", "data_size", "marginal_gain"}
ADVERSARIES = ("dropout", "free_rider", "label_flip", "noise", "sybil")
# what resolves only inside a Hydra job (the launch directory), fixed for composing outside one
OUTSIDE_A_JOB = ["paths.root_dir=/study"]


def _compose(*overrides: str, hydra: bool = True):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(
            config_name="train",
            overrides=OUTSIDE_A_JOB + list(overrides),
            return_hydra_config=hydra,
        )


def _jobs(study: str) -> list[list[str]]:
    """The override lists of the jobs the basic sweeper would launch for ``study``."""
    cfg = _compose(f"study={study}")
    args = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]  # as BasicSweeper does
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)
    return [job for batch in batches for job in batch]


def _job_configs(study: str):
    """(overrides, choices, resolved config) per job of seed 0 (seeds change nothing else)."""
    for job in _jobs(study):
        if "seed=1" in job or "seed=2" in job:
            continue
        cfg = _compose(f"study={study}", *job)
        chosen = dict(cfg.hydra.runtime.choices)
        with open_dict(cfg):
            del cfg["hydra"]
        yield job, chosen, OmegaConf.to_container(cfg, resolve=True)


def test_every_study_is_known():
    assert set(STUDIES) == set(SWEEPS)


@pytest.mark.parametrize("study", STUDIES)
def test_study_composes_with_its_hydra_node(study):
    experiment, folder, total = SWEEPS[study]
    cfg = _compose(f"study={study}")
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"  # derelayl-train study=... sweeps
    assert cfg.hydra.sweep.dir == f"/study/outputs/paper/{folder}"
    assert count_jobs(cfg) == total == len(_jobs(study))  # the progress lines' total
    assert cfg.tracking.experiment == experiment
    OmegaConf.to_container(_compose(f"study={study}", hydra=False), resolve=True)


@pytest.mark.parametrize("study", STUDIES)
def test_study_composes_on_the_command_line(cli, study):
    proc = cli(f"study={study}", "--cfg=job", "--resolve")
    assert proc.returncode == 0, proc.stderr
    assert f"experiment: {SWEEPS[study][0]}" in proc.stdout


def test_efficacy_is_methods_x_partitions_x_seeds_at_about_equal_computation():
    seen = set()
    for _job, chosen, cfg in _job_configs("efficacy"):
        algo, part = cfg["algorithm"], cfg["partition"]
        seen.add((chosen["algorithm"], chosen["partition"]))
        if chosen["partition"].startswith("dirichlet"):
            assert part["alpha"] == float(chosen["partition"].split("_")[1])
        if chosen["partition"] == "shards_2":
            assert part["classes_per_participant"] == 2
        # about equal computation: 30 epochs of the training set for everybody
        if chosen["algorithm"] == "relay":
            assert algo["rounds"] == 30 and algo["local_epochs"] == 1
        elif chosen["algorithm"] == "derelayl":
            assert cfg["derelayl"]["rounds"] == 30 and cfg["derelayl"]["performance"] == "trained"
        else:
            assert algo["rounds"] is None and algo["budget_epochs"] == 30
            assert algo["sample_budget"] is None
        assert not cfg["shapley"]["enabled"]
    methods = (
        "derelayl",
        "relay",
        "fedavg",
        "fedprox",
        "scaffold",
        "fednova",
        "fedadam",
        "local",
        "centralized",
    )
    assert seen == set(
        itertools.product(methods, ("iid", "dirichlet_0.5", "dirichlet_0.1", "shards_2"))
    )


def test_sustainability_is_every_scheme_under_derelayl_and_fedavg():
    seen = set()
    for _job, chosen, cfg in _job_configs("sustainability"):
        seen.add((chosen["algorithm"], chosen["incentive"]))
        assert cfg["churn"]["enabled"] and cfg["shapley"]["enabled"]
        assert cfg["participants"]["behaviour"]["free_rider"] == 0.2
        assert cfg["partition"]["alpha"] == 0.5
        if chosen["algorithm"] == "derelayl":
            assert cfg["derelayl"]["rounds"] == 30 and cfg["shapley"]["permutations"] == 100
        else:  # study/algorithm/sustainability_fedavg.yaml
            assert cfg["algorithm"]["rounds"] == 30 and cfg["shapley"]["permutations"] == 20
    assert seen == set(itertools.product(("derelayl", "fedavg"), INCENTIVES))


def test_fairness_is_every_scheme_with_shapley_values():
    seen = set()
    for _job, chosen, cfg in _job_configs("fairness"):
        seen.add(chosen["incentive"])
        assert chosen["algorithm"] == "derelayl" and cfg["derelayl"]["performance"] == "trained"
        assert cfg["shapley"]["enabled"] and not cfg["churn"]["enabled"]
        assert set(cfg["participants"]["behaviour"].values()) == {0.0}
    assert seen == INCENTIVES


def test_robustness_is_each_adversary_at_30_percent_against_each_defence():
    seen = {}
    for study, key in (("robustness", "local_epochs"), ("robustness_fedavg", "aggregator")):
        for _job, chosen, cfg in _job_configs(study):
            behaviour = cfg["participants"]["behaviour"]
            seen[(chosen["algorithm"], cfg["algorithm"][key], chosen["adversary"])] = {
                k: v for k, v in behaviour.items() if v
            }
            assert chosen["incentive"] == "derelayl" and cfg["partition"]["alpha"] == 0.5
            if study == "robustness_fedavg":  # a robust rule needs several clients a round
                assert cfg["algorithm"]["client_fraction"] == 0.5
                assert cfg["algorithm"]["krum_f"] == 3 and cfg["algorithm"]["budget_epochs"] == 30
                assert cfg["algorithm"]["strategy"]["aggregator"] == cfg["algorithm"][key]
    kinds = {"none": {}, **{kind: {kind: 0.3} for kind in ADVERSARIES}}
    want = {("derelayl", e, k): v for e in (1, 3, 5) for k, v in kinds.items()}
    want |= {("fedavg", a, k): v for a in ("mean", "median", "krum") for k, v in kinds.items()}
    assert seen == want


def test_economy_jobs_are_the_authors_presets():
    for _job, chosen, cfg in _job_configs("economy"):
        alone = _compose(f"experiment={chosen['experiment']}", hydra=False)
        theirs = OmegaConf.to_container(alone, resolve=True)
        assert cfg.pop("tracking")["experiment"] == "paper_economy"
        theirs.pop("tracking")
        assert cfg == theirs and cfg["num_participants"] == 256
        assert cfg["derelayl"]["performance"] == "random_walk"


def _sweep(cwd, *args: str) -> str:
    cmd = [sys.executable, "-m", "derelayl.cli.train", *args, "progress_every=100"]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env=dict(os.environ, HYDRA_FULL_ERROR="0"),
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "raised" not in log  # no callback failed
    return log


@pytest.mark.slow  # end to end through subprocesses (a minute or more): CI runs it
def test_tiny_studies_run_end_to_end_into_the_docs_tables(tmp_path):
    """Each study as users launch it, shrunk by command-line keys (which replace the study's
    sweep for the same key): no paths given, so the sweep callback resolves the default
    sqlite:///<launch dir>/mlflow.db in the launching process."""
    from mlflow.tracking import MlflowClient

    from derelayl.cli.report import main as report_main

    tiny = ["seed=0", "num_participants=10", "knobs.rounds=1"]
    log = _sweep(
        tmp_path, "study=robustness", "adversary=none,free_rider", "algorithm.local_epochs=1", *tiny
    )
    assert "sweep progress: 2/2 jobs done" in log
    _sweep(
        tmp_path, "study=robustness_fedavg", "adversary=noise", "algorithm.aggregator=median", *tiny
    )
    _sweep(tmp_path, "study=efficacy", "algorithm=relay,fedavg", "partition=dirichlet_0.1", *tiny)
    _sweep(tmp_path, "study=economy", "derelayl.rounds=3", "num_participants=16")
    _sweep(
        tmp_path,
        "study=fairness",
        "incentive=uniform",
        "seed=0",
        "num_participants=8",
        "derelayl.rounds=2",
    )
    _sweep(
        tmp_path,
        "study=sustainability",
        "algorithm=fedavg",
        "incentive=uniform",
        "seed=0",
        "num_participants=6",
        "algorithm.rounds=1",
        "shapley.permutations=2",
    )

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("paper_robustness").experiment_id])
    parents = [r for r in runs if r.data.tags.get("derelayl.sweep") == "parent"]
    assert len(parents) == 2 and len(runs) == 5
    assert {p.data.tags["adversary"] for p in parents} == {"none,free_rider", "noise"}
    tagged = {
        (r.data.tags["algorithm"], r.data.tags["adversary"]) for r in runs if r not in parents
    }
    assert tagged == {("derelayl", "none"), ("derelayl", "free_rider"), ("fedavg", "noise")}
    assert (tmp_path / "outputs/paper/robustness/derelayl/1/metrics.json").is_file()
    assert (tmp_path / "outputs/paper/economy/0/coins_per_participant.png").is_file()
    assert (tmp_path / "outputs/paper/economy/1/version_shares.png").is_file()

    docs = tmp_path / "docs" / "results"
    report_main(
        [
            "--experiment",
            "paper_robustness",
            "--tracking-uri",
            f"sqlite:///{tmp_path}/mlflow.db",
            "--out",
            str(tmp_path / "report"),
            "--metrics",
            "test_acc",
            "adversary_coin_share",
            "--table",
            str(docs / "robustness.md"),
        ]
    )
    table = (docs / "robustness.md").read_text()
    assert table.startswith("<!-- generated by derelayl-report")
    assert "| group | runs | seeds | test_acc | adversary_coin_share |" in table
    assert "| derelayl, adversary=free_rider, algorithm.aggregator=-" not in table
    for group in (
        "derelayl, adversary=free_rider",
        "derelayl, adversary=none",
        "fedavg, adversary=noise",
    ):
        assert f"| {group}" in table, table
    assert (tmp_path / "report" / "figures" / "robustness.png").is_file()

    # the run folders serve as well as MLflow: the groups come from each folder's choices.json
    report_main(
        [
            "--runs",
            str(tmp_path / "outputs/paper/efficacy"),
            "--out",
            str(tmp_path / "eff"),
            "--group-by",
            "algorithm",
            "partition",
            "--metrics",
            "test_acc",
            "bytes",
            "--table",
            str(docs / "efficacy.md"),
        ]
    )
    table = (docs / "efficacy.md").read_text()
    assert "| fedavg, partition=dirichlet_0.1 | 1 | 0 |" in table
    assert "| relay, partition=dirichlet_0.1 | 1 | 0 |" in table

    with pytest.raises(SystemExit) as exc:  # a metric no run reports: one line, nothing written
        report_main(
            [
                "--runs",
                str(tmp_path / "outputs/paper/efficacy"),
                "--out",
                str(tmp_path / "nothing"),
                "--metrics",
                "no_such_metric",
            ]
        )
    assert exc.value.code == 2 and not (tmp_path / "nothing").exists()
