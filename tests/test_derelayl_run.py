"""`algorithm=derelayl` end to end: trained models, MLflow, ledger verification, kill/resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from conftest import assert_one_line_error
from derelayl.app.pipeline import run_experiment
from derelayl.cli.ledger import main as ledger_main
from derelayl.io.ledger_files import EconomyFiles

VOLATILE = {"wall_time_s", "mlflow_run_id"}
SMALL = ("num_participants=12", "derelayl.rounds=6", "derelayl.num_test_cases=50")


def stable(metrics):
    return {k: v for k, v in metrics.items() if k not in VOLATILE}


def test_trained_run_reports_everything(make_cfg, tmp_path):
    out = tmp_path / "run"
    metrics = run_experiment(make_cfg(*SMALL), out)
    for key in (
        "test_acc",
        "test_loss",
        "rounds",
        "hops",
        "samples_seen",
        "coins_gini",
        "version_share_latest",
        "version_share_within_10",
        "version_share_none",
        "coins_total",
        "coins_minted",
        "coins_burned",
        "mlflow_run_id",
    ):
        assert key in metrics, key
    assert metrics["rounds"] == 6 and 0 < metrics["test_acc"] <= 1
    assert metrics["coins_total"] == pytest.approx(
        metrics["coins_minted"] - metrics["coins_burned"]
    )
    for name in (
        "ledger.jsonl",
        "coins_per_participant.png",
        "version_shares.png",
        "accuracy_vs_rounds.png",
        "participants.csv",
        "model.pt",
        "history.csv",
    ):
        assert (out / name).stat().st_size > 0, name
    assert len((out / "participants.csv").read_text().splitlines()) == 13
    # only each participant's newest and best model (and the run's best) are kept
    assert len(list((out / "models").glob("*.pt"))) <= 2 * 12 + 1

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(metrics["mlflow_run_id"])
    for key in (
        "coins_gini",
        "version_share_latest",
        "version_share_within_10",
        "version_share_none",
        "best_test_acc",
    ):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == list(
            range(1, 7)
        )
    assert run.data.params["derelayl.performance"] == "trained"
    assert run.data.params["algorithm.runner._target_"] == "derelayl.app.runners.derelayl.DeRelayL"


def test_random_walk_needs_no_data(make_cfg, tmp_path):
    metrics = run_experiment(
        make_cfg(
            "derelayl.performance=random_walk",
            "num_participants=64",
            "derelayl.rounds=40",
            "tracking=none",
            "dataset=cifar10",
        ),  # never loaded: no files needed
        tmp_path / "run",
    )
    assert metrics["test_acc"] is None and metrics["best_quality"] > 0.5
    assert not (tmp_path / "run" / "partition.json").exists()


def test_ledger_verify_ok_and_detects_tampering(make_cfg, tmp_path, capsys):
    out = tmp_path / "run"
    run_experiment(make_cfg(*SMALL, "tracking=none"), out)
    with pytest.raises(SystemExit) as ok:
        ledger_main(["verify", str(out)])
    assert ok.value.code == 0 and capsys.readouterr().out.startswith("OK")

    lines = (out / "ledger.jsonl").read_text().splitlines()
    block = json.loads(lines[9])
    block["payload"]["fee"] = 99.0
    lines[9] = json.dumps(block)
    (out / "ledger.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit) as bad:
        ledger_main(["verify", str(out)])
    assert bad.value.code == 1 and "BAD block 9" in capsys.readouterr().out


def test_ledger_verify_detects_an_altered_model(make_cfg, tmp_path, capsys):
    import torch

    out = tmp_path / "run"
    run_experiment(make_cfg(*SMALL, "tracking=none"), out)
    path = sorted((out / "models").glob("*.pt"))[0]
    state = torch.load(path, weights_only=True)
    next(iter(state.values())).add_(1.0)
    torch.save(state, path)
    with pytest.raises(SystemExit) as bad:
        ledger_main(["verify", str(out)])
    assert bad.value.code == 1 and "altered" in capsys.readouterr().out


@pytest.mark.parametrize("checkpoint_every, crash_after", [(1, 3), (3, 5)])
def test_interrupted_run_resumes_to_identical_numbers(
    make_cfg, tmp_path, monkeypatch, checkpoint_every, crash_after
):
    args = (*SMALL, "tracking=none", f"derelayl.checkpoint_every={checkpoint_every}")
    full = run_experiment(make_cfg(*args), tmp_path / "full")

    original = EconomyFiles.on_settled

    def crash(self, state, perf_state, ledger, history):
        if state.round == crash_after + 1:  # blocks of this round written, no checkpoint yet
            raise KeyboardInterrupt
        original(self, state, perf_state, ledger, history)

    monkeypatch.setattr(EconomyFiles, "on_settled", crash)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(make_cfg(*args), tmp_path / "resumed")
    monkeypatch.setattr(EconomyFiles, "on_settled", original)
    resumed = run_experiment(make_cfg(*args), tmp_path / "resumed")
    assert stable(resumed) == stable(full)
    for name in ("ledger.jsonl", "rounds.jsonl", "coins.f64", "participants.csv", "history.csv"):
        assert (tmp_path / "resumed" / name).read_bytes() == (
            tmp_path / "full" / name
        ).read_bytes(), name


@pytest.mark.slow  # end to end through subprocesses (a minute or more): CI runs it
def test_sigkilled_cli_run_resumes_to_identical_numbers(cli, tmp_path):
    # 1-epoch hops and no Shapley values: resuming is what is tested, not their cost
    args = (
        "num_participants=20",
        "derelayl.rounds=40",
        "tracking=none",
        "algorithm.local_epochs=1",
        "shapley.enabled=false",
    )
    full = cli(*args, f"hydra.run.dir={tmp_path}/full")
    assert full.returncode == 0, full.stderr

    run_dir = tmp_path / "killed"
    from conftest import tmp_overrides

    cmd = [
        sys.executable,
        "-m",
        "derelayl.cli.train",
        *tmp_overrides(tmp_path),
        *args,
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    rounds = run_dir / "rounds.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if rounds.exists() and rounds.read_text().count("\n") >= 8:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    settled = rounds.read_text().count("\n")
    assert 8 <= settled < 40

    again = cli(*args, f"hydra.run.dir={run_dir}")
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout + again.stderr
    a = json.loads((tmp_path / "full/metrics.json").read_text())
    b = json.loads((run_dir / "metrics.json").read_text())
    assert stable(a) == stable(b)
    assert (run_dir / "ledger.jsonl").read_bytes() == (tmp_path / "full/ledger.jsonl").read_bytes()


def test_resume_refuses_a_different_config(make_cfg, tmp_path):
    from derelayl.sim.errors import ConfigError

    run_experiment(make_cfg(*SMALL, "tracking=none"), tmp_path / "run")
    with pytest.raises(ConfigError, match="different config"):
        run_experiment(make_cfg(*SMALL, "tracking=none", "seed=1"), tmp_path / "run")


def test_default_run_is_derelayl_trained_and_reaches_085(make_cfg, tmp_path):
    cfg = make_cfg("tracking=none")
    assert cfg.algorithm.runner._target_.endswith(".DeRelayL")
    assert cfg.derelayl.performance == "trained"
    assert cfg.dataset._target_ == "derelayl.data.datasets.digits"
    metrics = run_experiment(cfg, tmp_path / "run")
    assert metrics["test_acc"] >= 0.85
    # Shapley values of the best model's contributors are on by default (shapley.enabled=auto)
    assert -1.0 <= metrics["coins_shapley_spearman"] <= 1.0


@pytest.mark.parametrize(
    "args, message",
    [
        (["derelayl.winner_share=0"], "derelayl.winner_share (s) must be in (0, 1]"),
        (["derelayl.winner_share=1.2"], "derelayl.winner_share (s) must be in (0, 1]"),
        (["derelayl.trainers_per_owner=0"], "derelayl.trainers_per_owner (k) must be >= 1"),
        (["derelayl.active_share=1.0"], "derelayl.active_share"),
        (["num_participants=3", "derelayl.performance=random_walk"], "too small for the roles"),
        (["derelayl.num_test_cases=1000"], "exceeds the validation split"),
        (["derelayl.performance=oracle"], "allowed: random_walk, trained"),
    ],
)
def test_bad_protocol_input_is_one_clear_line(cli_in_process, tmp_path, args, message):
    code, out, err = cli_in_process(*args, "tracking=none", f"hydra.run.dir={tmp_path}/bad")
    assert_one_line_error(code, err, message)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["participants.economics.cost_per_sample=-0.1"],
            "participants.economics.cost_per_sample must be >= 0",
        ),
        (["incentive=derelayl_bounded", "incentive.gamma=0"], r"incentive.gamma must be in (0, 1]"),
        (
            ["incentive=derelayl_bounded", "incentive.gamma=1.5"],
            r"incentive.gamma must be in (0, 1]",
        ),
        (["shapley.permutations=0"], "shapley.permutations"),
        (
            ["participants.behaviour.free_rider=0.7", "participants.behaviour.noise=0.4"],
            "sum to 1.1; they must sum to at most 1",
        ),
        (["incentive=uniform", "incentive.reward=-1"], "incentive.reward must be >= 0"),
        (["churn.enabled=true", "churn.pool_factor=0.5"], "churn.pool_factor must be >= 1"),
        (["derelayl.acceptance_margin=-1"], "derelayl.acceptance_margin must be >= 0"),
        (["shapley.enabled=maybe"], "shapley.enabled must be true, false or auto"),
    ],
)
def test_bad_economy_input_is_one_clear_line(cli_in_process, tmp_path, args, message):
    code, out, err = cli_in_process(*args, "tracking=none", f"hydra.run.dir={tmp_path}/bad")
    assert_one_line_error(code, err, message)


def test_trained_economy_with_churn_adversaries_schemes_and_shapley(make_cfg, tmp_path):
    out = tmp_path / "run"
    metrics = run_experiment(
        make_cfg(
            *SMALL,
            "tracking=none",
            "churn.enabled=true",
            "churn.window=2",
            "incentive=derelayl_bounded",
            "participants.behaviour.free_rider=0.25",
            "participants.behaviour.label_flip=0.25",
            "shapley.enabled=true",
            "shapley.permutations=20",
        ),
        out,
    )
    for key in (
        "retention",
        "coins_gini",
        "coins_shapley_spearman",
        "adversary_coin_share",
        "test_acc",
        "free_rider_wins",
        "label_flip_matches",
        "active_participants",
    ):
        assert key in metrics, key
    assert metrics["free_rider_wins"] == 0
    # a free-rider's model is its parent: it changes the parent's score on the test cases by 0
    assert metrics["free_rider_hop_gain"] == 0.0 and "label_flip_hop_gain" in metrics
    assert -1.0 <= metrics["coins_shapley_spearman"] <= 1.0
    shapley = json.loads((out / "shapley.json").read_text())
    assert shapley["lineage"] and set(shapley["values"]) <= {str(p) for _, p in shapley["lineage"]}
    assert (out / "coins_vs_shapley.png").stat().st_size > 0
    rows = (out / "participants.csv").read_text().splitlines()
    assert rows[0].startswith("participant,behaviour,active,coins,utility")
    # 12 participants at the start (a pool of 24): everybody who ever took part has a row
    assert 12 <= len(rows) - 1 <= 24


def test_every_settled_round_is_on_disk_while_the_run_goes_on(make_cfg, tmp_path, monkeypatch):
    # the files stay open for the run: each round's lines must still reach the disk as it settles
    seen = []
    original = EconomyFiles.on_settled

    def check(self, state, perf_state, ledger, history):
        original(self, state, perf_state, ledger, history)
        lines = (self.dir / "ledger.jsonl").read_text().splitlines()
        rounds = (self.dir / "rounds.jsonl").read_text().splitlines()
        coins = (self.dir / "coins.f64").stat().st_size
        seen.append((len(lines), len(rounds), coins))

    monkeypatch.setattr(EconomyFiles, "on_settled", check)
    args = ("num_participants=12", "derelayl.rounds=5", "tracking=none")
    run_experiment(make_cfg(*args, "derelayl.performance=random_walk"), tmp_path / "run")
    assert [(r, c) for _, r, c in seen] == [(i, i * 12 * 8) for i in range(1, 6)]
    assert all(b > 0 for b, _, _ in seen) and [b for b, _, _ in seen] == sorted(
        b for b, _, _ in seen
    )
    assert seen[-1][0] == len((tmp_path / "run" / "ledger.jsonl").read_text().splitlines())
