"""Hostile input: every bad value, type, key or path is one line naming it (and what is allowed),
exit status 2, and nothing left behind (no run folder, no MLflow store or run), for
derelayl-train, derelayl-ledger and derelayl-report."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import assert_one_line_error


def nothing_left(tmp: Path, run_dir: Path) -> None:
    assert not run_dir.exists(), f"{run_dir} was created"
    assert not (tmp / "mlflow.db").exists(), "an MLflow store was created"
    assert not (tmp / "outputs").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["num_participants=abc"], "num_participants must be an integer >= 1 (got 'abc')"),
        (["derelayl.rounds=2.5"], "derelayl.rounds must be an integer >= 1 (got 2.5)"),
        (["derelayl.rounds=nan"], "derelayl.rounds must be an integer >= 1 (got nan)"),
        (["derelayl.rounds=inf"], "derelayl.rounds must be an integer"),
        (["derelayl.royalty=nan"], "derelayl.royalty must be a finite number >= 0 (got nan)"),
        (["derelayl.fee_per_deposit=inf"], "derelayl.fee_per_deposit must be a finite number >= 0"),
        (["algorithm.optimizer.lr=nan"], "algorithm.optimizer.lr must be a finite number > 0"),
        (["algorithm.optimizer.lr=-0.1"], "algorithm.optimizer.lr must be > 0 (got -0.1)"),
        (
            ["algorithm=relay", "algorithm.optimizer.lr=nan"],
            "algorithm.optimizer.lr must be a finite",
        ),
        (["target_acc=inf"], "target_acc must be a finite number in [0, 1] or null (got inf)"),
        (["derelayl.version_depth=-1"], "derelayl.version_depth must be >= 0 (got -1)"),
        (["seed=[1,2]"], "seed must be an integer >= 0 (got [1, 2])"),
        (["num_participants={a:1}"], "num_participants must be an integer >= 1"),
        (["~seed"], "seed is missing"),
        (["tracking.experiment="], "tracking.experiment must be a non-empty string (got '')"),
        (["tracking.uri=ftp://host/x"], "tracking.uri 'ftp://host/x' is not a tracking URI"),
        (
            ["tracking.uri=sqlite:////no/such/folder/mlflow.db"],
            "the folder /no/such/folder does not",
        ),
        (["algorithm.rounds=10"], "unknown key algorithm.rounds; allowed under algorithm: runner,"),
        (["partition.alpha=abc"], "partition.alpha must be a finite number > 0 (got 'abc')"),
        (
            ["algorithm=fedavg", "algorithm.clients_per_round=x"],
            "algorithm.clients_per_round must be an integer or null (got 'x')",
        ),
        (["study=nope"], "unknown study 'nope'; allowed: economy, efficacy"),
        (["adversary=sybl"], "unknown adversary 'sybl'; allowed: dropout"),
        (["derelayl.roundz=10"], "unknown key derelayl.roundz"),
        (["seed=[1,"], "bad override"),
        (["--config-name=nope"], "Cannot find primary config 'nope'"),
        (["+experiment=nope"], "allowed: authors_coins"),
        (["shapley.enabled=maybe"], "shapley.enabled must be true, false or auto"),
        (["-m", "seed=0,x"], "seed must be an integer >= 0 (got 'x')"),
        (["-m", "algorithm=relay,derelayl", "algorithm.rounds=2"], "unknown key algorithm.rounds"),
        # 30 jobs, more than are checked one by one: every value is still checked before a job runs
        (
            ["-m", "seed=0,1,2,3,4", "num_participants=6,7,8,9,10,-1"],
            "sweep job seed=0 num_participants=-1: num_participants must be >= 1 (got -1)",
        ),
    ],
)
def test_bad_overrides_are_one_line_and_leave_nothing(
    cli_in_process, tmp_path, monkeypatch, args, message
):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    code, out, err = cli_in_process(
        *args, f"hydra.run.dir={run_dir}", f"hydra.sweep.dir={tmp_path}/sweep"
    )
    assert_one_line_error(code, err, message)
    nothing_left(tmp_path, run_dir)
    assert not (tmp_path / "sweep").exists()


def test_an_unwritable_run_folder_is_one_line(cli_in_process, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    code, out, err = cli_in_process(f"hydra.run.dir={tmp_path}/afile/run")
    assert_one_line_error(code, err, "afile is not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_tracking_server_fails_fast_with_one_line(cli, tmp_path):
    uri = f"http://127.0.0.1:{_closed_port()}"
    proc = cli(
        "tracking=server", f"tracking.uri={uri}", f"hydra.run.dir={tmp_path}/run", timeout=60
    )  # before: ~5 minutes of retries, then 106 lines
    assert_one_line_error(
        proc.returncode, proc.stderr, f"cannot reach the MLflow tracking server {uri}"
    )
    assert not (tmp_path / "run").exists()


# keys whose every value below is invalid (all have a lower bound >= 0 or are integers)
NUMBERS = [
    "num_participants",
    "seed",
    "torch_threads",
    "progress_every",
    "derelayl.rounds",
    "derelayl.royalty",
    "derelayl.fee_per_deposit",
    "derelayl.fee_per_model_case",
    "derelayl.version_depth",
    "derelayl.winner_share",
    "derelayl.dropout",
    "derelayl.owner_budget",
    "derelayl.num_test_cases",
    "derelayl.trainers_per_owner",
    "algorithm.optimizer.lr",
    "algorithm.optimizer.momentum",
    "algorithm.batch_size",
    "algorithm.local_epochs",
    "partition.alpha",
    "churn.window",
    "churn.pool_factor",
    "shapley.permutations",
    "shapley.tolerance",
    "participants.behaviour.noise",
    "participants.noise_std",
    "participants.economics.cost_per_sample",
    "participants.devices.speed_median",
    "tracking.max_artifact_mb",
    "dataset.val_fraction",
]
INTEGERS = {
    "num_participants",
    "seed",
    "torch_threads",
    "progress_every",
    "derelayl.rounds",
    "derelayl.version_depth",
    "derelayl.num_test_cases",
    "derelayl.trainers_per_owner",
    "algorithm.batch_size",
    "algorithm.local_epochs",
    "churn.window",
    "shapley.permutations",
}

# (a quoted number such as '1' is not among them: a typed key converts it to the number, as
# OmegaConf's structured configs do)
always_bad = st.one_of(
    st.sampled_from(
        ["nan", "inf", "-inf", "null", "true", "abc", "'x1'", "[1]", "{a: 1}", "-1e308", "''"]
    ),
    st.floats(max_value=-1e-6, allow_nan=False, allow_infinity=False).map(repr),
    st.integers(max_value=-1).map(str),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(
        lambda t: t not in ("true", "false", "null", "nan", "inf")
    ),
)


@st.composite
def bad_override(draw):
    key = draw(st.sampled_from(NUMBERS))
    if key in INTEGERS:
        value = draw(
            st.one_of(
                always_bad,
                st.floats(0.01, 1e6).filter(lambda x: not float(x).is_integer()).map(repr),
            )
        )
    else:
        value = draw(always_bad)
    return f"{key}={value}"


@pytest.mark.slow  # 60 generated cases through the CLI (20 s or more): CI runs it
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(overrides=st.lists(bad_override(), min_size=1, max_size=3))
def test_generated_bad_overrides_are_one_line_and_leave_nothing(
    cli_in_process, tmp_path, monkeypatch, overrides
):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    code, out, err = cli_in_process(*overrides, f"hydra.run.dir={run_dir}")
    assert_one_line_error(code, err, "derelayl-train: error: ")
    nothing_left(tmp_path, run_dir)


# -- derelayl-ledger and derelayl-report ----------------------------------------------------------
def _run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.fixture
def junk(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    for name, text in (
        ("garbage", "garbage\n"),
        ("array", "[1, 2]\n"),
        ("empty_ledger", ""),
        ("strindex", '{"index": "a"}\n'),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ledger.jsonl").write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["verify", "missing"], 2, "missing is not a directory"),
        (["verify", "afile"], 2, "afile is not a directory"),
        (["verify", "empty"], 2, "no ledger.jsonl in empty"),
        (["show", "empty"], 2, "no ledger.jsonl in empty"),
        (["verify", "empty_ledger"], 2, "is empty and empty_ledger holds no run"),
        (["show", "garbage"], 2, "block 0: not valid JSON"),
        (["show", "array"], 2, "block 0: not a JSON object"),
        (["show", "strindex"], 2, "index is not an integer"),
        (["frob", "empty"], 2, "invalid choice: 'frob'"),
        (["verify"], 2, "the following arguments are required: run_dir"),
        (["verify", "empty", "extra"], 2, "unrecognized arguments: extra"),
        (["verify", "empty", "--tracking-uri", "junk"], 2, "'junk' is not a tracking URI"),
        (["verify", "empty", "--run-id", "1234"], 2, "'1234' is not an MLflow run id"),
    ],
)
def test_bad_ledger_input_is_one_line(junk, args, code, message):
    proc = _run("derelayl.cli.ledger", *args, cwd=junk)
    assert_one_line_error(proc.returncode, proc.stderr, message)


@pytest.mark.parametrize(
    "name, message",
    [
        ("garbage", "BAD block 0: not valid JSON"),
        ("array", "BAD block 0: not a JSON object"),
        ("strindex", "BAD block 0: index is not an integer"),
    ],
)
def test_a_garbage_ledger_is_bad_not_ok(junk, name, message):
    proc = _run("derelayl.cli.ledger", "verify", name, cwd=junk)
    assert proc.returncode == 1 and proc.stdout.startswith(message) and not proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1


@pytest.fixture
def report_junk(tmp_path):
    bad = tmp_path / "bad" / "r1"
    bad.mkdir(parents=True)
    (bad / "metrics.json").write_text("{bad")
    yaml_bad = tmp_path / "badyaml" / "r1"
    yaml_bad.mkdir(parents=True)
    (yaml_bad / "metrics.json").write_text('{"test_acc": 0.5}')
    (yaml_bad / "config.yaml").write_text("a: [")
    csv_bad = tmp_path / "badcsv" / "r1"
    csv_bad.mkdir(parents=True)
    (csv_bad / "metrics.json").write_text('{"test_acc": 0.5}')
    (csv_bad / "config.yaml").write_text("seed: 0\n")
    (csv_bad / "history.csv").write_text("round,test_acc\nx,y\n")
    (tmp_path / "afile").write_text("x")
    return tmp_path


@pytest.mark.parametrize(
    "args, message",
    [
        (["--experiment", "x"], "no MLflow store at"),
        (["--experiment", ""], "--experiment must be a non-empty"),
        (["--experiment", "x", "--tracking-uri", "garbage"], "'garbage' is not a tracking URI"),
        (
            ["--experiment", "x", "--tracking-uri", "http://127.0.0.1:{port}"],
            "cannot reach the MLflow tracking server",
        ),
        (["--experiment", "x", "--parent-run", "x' or 1=1"], "is not an MLflow run id"),
        (["--runs", "missing"], "no such run folder: missing"),
        (["--runs", "bad"], "bad/r1/metrics.json cannot be read"),
        (["--runs", "badyaml"], "badyaml/r1/config.yaml cannot be read"),
        (["--runs", "badcsv"], "badcsv/r1/history.csv cannot be read"),
        (["--runs", "badcsv", "--where", "foo"], "--where 'foo': expected KEY=VALUE"),
        (["--runs", "badcsv", "--out", "afile/report"], "afile is not a folder"),
        ([], "one of the arguments --experiment --runs is required"),
        (["--bogus"], "one of the arguments --experiment --runs is required"),
    ],
)
def test_bad_report_input_is_one_line(report_junk, args, message):
    args = [a.format(port=_closed_port()) for a in args]
    proc = _run("derelayl.cli.report", *args, cwd=report_junk)
    assert_one_line_error(proc.returncode, proc.stderr, message)
    assert not (report_junk / "mlflow.db").exists()  # reading never creates a store
