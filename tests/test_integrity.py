"""Run integrity (issue "Nothing lost, nothing forged"): nothing read from a run folder runs code,
one run per folder, concurrent first runs, refused runs touch nothing, killed runs are closed
and resume, and tampering is caught against the ledger's anchor outside the folder."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import assert_one_line_error, tmp_overrides
from derelayl.app.pipeline import run_experiment
from derelayl.cli.ledger import main as ledger_main
from derelayl.protocol.ledger import block_hash

TINY_TRAINED = (
    "num_participants=10",
    "derelayl.rounds=3",
    "derelayl.num_test_cases=30",
    "algorithm.local_epochs=1",
    "shapley.enabled=false",
)
WALK = ("derelayl.performance=random_walk", "num_participants=16")
# a trained run slow enough to be stopped mid-way (a round takes a fraction of a second)
SLOW = (
    "num_participants=12",
    "derelayl.rounds=25",
    "derelayl.num_test_cases=30",
    "algorithm.local_epochs=1",
    "shapley.enabled=false",
    "tracking.flush_every_s=0",
)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file's bytes (as a hash) under a folder, hidden ones included."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def ledger(*args: str, capsys) -> tuple[int, str, str]:
    try:
        ledger_main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def runs_in(uri: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    return [
        r
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id], max_results=1000)
    ]


# -- nothing in a run folder runs code ------------------------------------------------------------
class _Payload:
    """Unpickling this creates the marker file: what a planted file would do to a reader."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def plant(path: Path, marker: Path) -> None:
    import torch

    if path.suffix == ".pt":  # what torch.load without weights_only would execute
        torch.save({"weights": _Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(_Payload(marker)))


@pytest.fixture(scope="module")
def finished_trained_run(tmp_path_factory):
    """A small trained DeRelayL run written by the real CLI (with .hydra/, train.log, MLflow)."""
    tmp = tmp_path_factory.mktemp("payload")
    run_dir = tmp / "run"
    env = dict(os.environ, HYDRA_FULL_ERROR="0")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "derelayl.cli.train",
            *tmp_overrides(tmp),
            *TINY_TRAINED,
            f"hydra.run.dir={run_dir}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return tmp, run_dir


def test_a_run_writes_the_files_the_payload_test_covers(finished_trained_run):
    _, run_dir = finished_trained_run
    names = set(snapshot(run_dir))
    for name in (
        "checkpoint.npz",
        "ledger.jsonl",
        "rounds.jsonl",
        "coins.f64",
        "metrics.json",
        "config.yaml",
        ".hydra/config.yaml",
        ".hydra/hydra.yaml",
        ".hydra/overrides.yaml",
        "history.csv",
        "participants.csv",
        "partition.json",
        "model.pt",
        "mlflow_runs.json",
        "train.log",
        ".lock",
    ):
        assert name in names, name
    assert any(n.startswith("models/") for n in names)
    assert not (run_dir / "checkpoint.pkl").exists()


def _payload_cases():
    names = [
        "checkpoint.npz",
        "checkpoint.pkl",
        "models/*.pt",
        "model.pt",
        "ledger.jsonl",
        "rounds.jsonl",
        "coins.f64",
        "metrics.json",
        "config.yaml",
        ".hydra/config.yaml",
        ".hydra/hydra.yaml",
        ".hydra/overrides.yaml",
        "history.csv",
        "participants.csv",
        "partition.json",
        "mlflow_runs.json",
        "train.log",
        ".lock",
        "coins_per_participant.png",
        "version_shares.png",
        "accuracy_vs_rounds.png",
    ]
    return names


@pytest.mark.parametrize("name", _payload_cases())
def test_a_planted_payload_never_runs(finished_trained_run, tmp_path, name, cli_in_process, capsys):
    tmp, original = finished_trained_run
    run_dir = tmp_path / "run"
    shutil.copytree(original, run_dir)
    marker = tmp_path / "PWNED"
    targets = sorted(run_dir.glob(name)) if "*" in name else [run_dir / name]
    assert targets
    for path in targets:
        plant(path, marker)

    for command in ("verify", "show"):
        code, out, err = ledger(command, str(run_dir), capsys=capsys)
        assert not marker.exists(), f"{command} ran the payload in {name}"
        assert "Traceback" not in out + err
        if code != 0:  # refused or BAD: one line
            assert len((out + err).strip().splitlines()) == 1, out + err

    code, out, err = cli_in_process(
        *TINY_TRAINED,
        f"hydra.run.dir={run_dir}",
        "skip_finished=false",
        f"tracking.uri=sqlite:///{tmp}/mlflow.db",
        f"tracking.artifact_location={tmp}/mlartifacts",
    )
    assert not marker.exists(), f"derelayl-train ran the payload in {name}"
    assert "Traceback" not in err
    if code != 0:
        assert_one_line_error(code, err, "")
    if name in ("checkpoint.npz", "checkpoint.pkl", "config.yaml"):
        assert code == 2  # an unreadable resume point or config is refused, never loaded


def test_checkpoint_is_data_only_and_an_old_pickle_is_refused(tmp_path, make_cfg, capsys):
    import torch

    from derelayl.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    state = {
        "a": np.arange(3.0),
        "t": torch.ones(2),
        "x": [1, None, float("-inf")],
        "nested": {"k": "v"},
    }
    save_checkpoint(tmp_path / "c.npz", state)
    back = load_checkpoint(tmp_path / "c.npz")
    assert np.array_equal(back["a"], state["a"]) and torch.equal(back["t"], state["t"])
    assert back["x"][:2] == [1, None] and back["x"][2] == float("-inf")
    assert back["nested"] == {"k": "v"}
    with pytest.raises(CheckpointError, match="cannot hold"):
        save_checkpoint(tmp_path / "d.npz", {"f": lambda: 0})
    (tmp_path / "e.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a valid checkpoint"):
        load_checkpoint(tmp_path / "e.npz")

    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pkl").write_bytes(pickle.dumps({"old": 1}))
    from derelayl.sim.errors import ConfigError

    with pytest.raises(ConfigError, match="pickled checkpoint from an older version"):
        run_experiment(make_cfg(*WALK, "derelayl.rounds=2", "tracking=none"), out)


# -- one run, one folder --------------------------------------------------------------------------
def _train_cmd(tmp: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "derelayl.cli.train", *tmp_overrides(tmp), *args]


def _start(tmp: Path, run_dir: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, HYDRA_FULL_ERROR="0")
    return subprocess.Popen(
        _train_cmd(tmp, *args, f"hydra.run.dir={run_dir}"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp,
        env=env,
    )


def _wait_for_rounds(proc: subprocess.Popen, run_dir: Path, rounds: int) -> None:
    path = run_dir / "rounds.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.read_text().count("\n") >= rounds:
            return
        time.sleep(0.01)
    raise AssertionError("the run ended (or stalled) before it could be stopped")


def test_a_second_process_is_refused_from_a_held_folder(tmp_path):
    """Even with the same config (a resume), a folder is entered only once its holder is gone."""
    run_dir = tmp_path / "held"
    args = (*SLOW[:1], "derelayl.rounds=500", *SLOW[2:], "tracking=none")
    first = _start(tmp_path, run_dir, *args)
    # the files a second process would have to write to take the folder (the live first run
    # keeps appending to others and deletes models it no longer needs: not snapshotted whole)
    held = ("config.yaml", ".lock", "partition.json", ".hydra/config.yaml")

    def watched():
        return {
            name: hashlib.sha256((run_dir / name).read_bytes()).hexdigest()
            for name in held
            if (run_dir / name).is_file()
        }

    try:
        _wait_for_rounds(first, run_dir, 1)
        before = watched()
        env = dict(os.environ, HYDRA_FULL_ERROR="0")
        second = subprocess.run(
            _train_cmd(tmp_path, *args, f"hydra.run.dir={run_dir}"),
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
        )
        assert first.poll() is None, "the first run ended before the second was refused"
        assert_one_line_error(second.returncode, second.stderr, "is in use by a running run")
        assert f"pid {first.pid}" in second.stderr
        after = watched()  # the second wrote nothing
        for name in held:
            assert after.get(name) == before.get(name), name
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 143, err


@pytest.mark.slow  # end to end through subprocesses (a minute or more): CI runs it
def test_runs_started_together_get_their_own_folders_and_all_are_recorded(tmp_path):
    """Default run folders are unique, and first runs racing to create the MLflow store all
    land in it (the sqlite schema migration used to fail: table _alembic_tmp_tags exists)."""
    env = dict(os.environ, HYDRA_FULL_ERROR="0")
    procs = [
        subprocess.Popen(
            _train_cmd(tmp_path, *WALK, "derelayl.rounds=3", f"seed={i}"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=env,
        )
        for i in range(4)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    folders = sorted(p.parent for p in (tmp_path / "outputs/runs").rglob("metrics.json"))
    assert len(folders) == 4
    for folder in folders:
        blocks = [json.loads(line) for line in (folder / "ledger.jsonl").read_text().splitlines()]
        assert [b["index"] for b in blocks] == list(range(len(blocks)))
    runs = runs_in(f"sqlite:///{tmp_path}/mlflow.db")
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 4
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2", "3"]


# -- a refused run touches nothing ----------------------------------------------------------------
def test_a_refused_run_changes_nothing_in_a_finished_folder(
    finished_trained_run, tmp_path, cli_in_process
):
    tmp, original = finished_trained_run
    run_dir = tmp_path / "run"
    shutil.copytree(original, run_dir)
    uri = f"sqlite:///{tmp_path}/store.db"
    shutil.copy(tmp / "mlflow.db", tmp_path / "store.db")
    before, runs_before = snapshot(run_dir), len(runs_in(uri))
    store = (tmp_path / "store.db").read_bytes()
    tracking = (f"tracking.uri={uri}", f"tracking.artifact_location={tmp_path}/art")
    cases = [
        (("seed=1",), "holds a run with a different config (seed: 0 there, 1 now)"),
        (("derelayl.rounds=2.5",), "derelayl.rounds must be an integer >= 1 (got 2.5)"),
        (("num_participants=abc",), "num_participants must be an integer >= 1 (got 'abc')"),
        (("algorithm.rounds=3",), "unknown key algorithm.rounds"),
    ]
    for extra, message in cases:
        code, out, err = cli_in_process(
            *TINY_TRAINED, *tracking, f"hydra.run.dir={run_dir}", *extra
        )
        assert_one_line_error(code, err, message)
        assert snapshot(run_dir) == before, extra
    assert len(runs_in(uri)) == runs_before
    assert (tmp_path / "store.db").read_bytes() == store  # no run, no experiment, nothing

    # without its checkpoint a finished run is not overwritten (its ledger would be lost)
    (run_dir / "checkpoint.npz").unlink()
    before = snapshot(run_dir)
    code, out, err = cli_in_process(
        *TINY_TRAINED, *tracking, f"hydra.run.dir={run_dir}", "skip_finished=false"
    )
    assert_one_line_error(code, err, "without a checkpoint to resume from")
    assert snapshot(run_dir) == before


def test_a_refused_run_leaves_no_folder_and_no_store(tmp_path, cli_in_process, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli_in_process("derelayl.royalty=nan")  # the default, timestamped folder
    assert_one_line_error(code, err, "derelayl.royalty must be a finite number >= 0 (got nan)")
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "mlflow.db").exists()
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "README.txt").write_text("mine")
    code, out, err = cli_in_process(*WALK, "derelayl.rounds=2", f"hydra.run.dir={foreign}")
    assert_one_line_error(code, err, "holds files (README.txt) but no run config")
    assert sorted(p.name for p in foreign.iterdir()) == ["README.txt"]


# -- killed runs ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sig, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")]
)
def test_sigterm_and_sigint_close_the_mlflow_run_as_killed(tmp_path, sig, code, name):
    run_dir = tmp_path / "run"
    proc = _start(tmp_path, run_dir, *SLOW)
    _wait_for_rounds(proc, run_dir, 4)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err and f"interrupted by {name}" in lines[-1]
    assert f"hydra.run.dir={run_dir}" in lines[-1]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = runs_in(f"sqlite:///{tmp_path}/mlflow.db")
    assert run.info.status == "KILLED"
    settled = (run_dir / "rounds.jsonl").read_text().count("\n")
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "coins_gini")]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= settled - 1 >= 3


@pytest.mark.slow  # end to end through subprocesses (20 s or more): CI runs it
def test_a_sigkilled_run_is_closed_by_its_writer_and_its_rerun_holds_every_round(tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(tmp_path, run_dir, *SLOW)
    _wait_for_rounds(proc, run_dir, 5)
    # the folder notes the MLflow run once the writer has created it (the run does not wait;
    # a run killed before that is closed KILLED all the same: the writer test below)
    deadline = time.monotonic() + 60
    while not (run_dir / "mlflow_runs.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # the MLflow writer process outlives the killed run: it writes what it was handed and
    # closes the record as KILLED when the run's end of the pipe closes
    deadline = time.monotonic() + 60
    while (stale := runs_in(uri)[0]).info.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert stale.info.status == "KILLED"
    steps = [
        m.step
        for m in MlflowClient(tracking_uri=uri).get_metric_history(stale.info.run_id, "coins_gini")
    ]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 3
    env = dict(os.environ, HYDRA_FULL_ERROR="0")
    again = subprocess.run(
        _train_cmd(tmp_path, *SLOW, f"hydra.run.dir={run_dir}"),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    status = {r.info.run_id: r.info.status for r in runs_in(uri)}
    assert status.pop(stale.info.run_id) == "KILLED"  # (closed once, not reopened)
    (final,) = status.items()
    assert final[1] == "FINISHED"
    client = MlflowClient(tracking_uri=uri)
    assert [m.step for m in client.get_metric_history(final[0], "coins_gini")] == list(range(1, 26))
    assert [
        r["run_id"] for r in json.loads((run_dir / "mlflow_runs.json").read_text())["runs"]
    ] == [stale.info.run_id, final[0]]


RESUMABLE = [
    ("algorithm=relay", "algorithm.rounds=4", "num_participants=6"),
    ("algorithm=fedavg", "algorithm.rounds=4", "num_participants=8"),
    (
        "algorithm=scaffold",
        "algorithm.rounds=4",
        "num_participants=8",
        "algorithm.optimizer.momentum=0",
    ),
    (
        "algorithm=fedavg",
        "algorithm.rounds=5",
        "num_participants=8",
        "churn.enabled=true",
        "participants.behaviour.free_rider=0.2",
    ),
    ("algorithm=local", "algorithm.rounds=3", "num_participants=5"),
    ("algorithm=centralized", "algorithm.rounds=3"),
]


@pytest.mark.parametrize("overrides", RESUMABLE, ids=lambda o: "-".join(o[:2]))
def test_relay_and_fl_runs_resume_to_identical_numbers(make_cfg, tmp_path, monkeypatch, overrides):
    from derelayl.io.checkpoint import RoundCheckpoint

    args = (*overrides, "tracking=none")
    full = run_experiment(make_cfg(*args), tmp_path / "full")
    original = RoundCheckpoint.on_round

    def crash(self, record):
        original(self, record)
        if record.round == 2:  # killed after round 2's checkpoint
            raise KeyboardInterrupt

    monkeypatch.setattr(RoundCheckpoint, "on_round", crash)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(make_cfg(*args), tmp_path / "resumed")
    monkeypatch.setattr(RoundCheckpoint, "on_round", original)
    resumed = run_experiment(make_cfg(*args), tmp_path / "resumed")
    drop = {"wall_time_s", "mlflow_run_id"}
    assert {k: v for k, v in resumed.items() if k not in drop} == {
        k: v for k, v in full.items() if k not in drop
    }
    for name in ("history.csv", "model.pt"):
        if (tmp_path / "full" / name).exists():
            assert (tmp_path / "resumed" / name).read_bytes() == (
                tmp_path / "full" / name
            ).read_bytes(), name


# -- tamper evidence ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tracked_walk(tmp_path_factory):
    """A finished, tracked random-walk run (6 rounds); tests verify copies of its folder."""
    from hydra import compose, initialize_config_dir

    from derelayl.cli.train import config_dir

    tmp = tmp_path_factory.mktemp("walk")
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(
            config_name="train", overrides=[*tmp_overrides(tmp), *WALK, "derelayl.rounds=6"]
        )
    metrics = run_experiment(cfg, tmp / "run")
    return tmp / "run", metrics["mlflow_run_id"]


@pytest.fixture
def _tracked_walk_run(tracked_walk, tmp_path):
    def copy(*_):
        out = tmp_path / "run"
        shutil.copytree(tracked_walk[0], out)
        return out, tracked_walk[1]

    return copy


def forge_credit(run_dir: Path, amount: float = 5.0, who: int = 3) -> None:
    """A careful forger: adds a credit to the round-2 settlement, re-hashes the whole chain,
    deletes the checkpoint and rewrites every file that reports balances to match."""
    from derelayl.io.audit import replay_by_round
    from derelayl.sim.stats import gini

    lines = (run_dir / "ledger.jsonl").read_text().splitlines()
    blocks = [json.loads(line) for line in lines]
    prev = blocks[0]["prev_hash"]
    for b in blocks:
        if b["kind"] == "settlement" and b["round"] == 1:
            credits = b["payload"]["credits"]
            credits[str(who)] = credits.get(str(who), 0.0) + amount
            b["payload"]["royalties_minted"] += amount
        b["prev_hash"] = prev
        b["hash"] = block_hash(b)
        prev = b["hash"]
    (run_dir / "ledger.jsonl").write_text(
        "".join(json.dumps(b, sort_keys=True, separators=(",", ":")) + "\n" for b in blocks)
    )
    (run_dir / "checkpoint.npz").unlink()
    n = 16
    rows = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    replay = replay_by_round(blocks, n, len(rows))
    np.concatenate([replay[k]["coins"] for k in range(1, len(rows) + 1)]).astype(np.float64).tofile(
        run_dir / "coins.f64"
    )
    for k, row in enumerate(rows, start=1):
        r = replay[k]
        row.update(
            coins_minted=r["minted_round"],
            coins_total=float(r["coins"].sum()),
            coins_issued_total=r["minted"],
            coins_gini=gini(r["coins"]),
            coins_max=float(r["coins"].max()),
            coins_mean=float(r["coins"].mean()),
        )
    (run_dir / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run_dir / "history.csv").unlink()
    import csv

    with open(run_dir / "participants.csv", newline="") as fh:
        people = list(csv.DictReader(fh))
    for p in people:
        p["coins"] = repr(float(replay[len(rows)]["coins"][int(p["participant"])]))
    with open(run_dir / "participants.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(people[0]))
        w.writeheader()
        w.writerows(people)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.update(
        coins_total=float(replay[len(rows)]["coins"].sum()),
        coins_minted=replay[len(rows)]["minted"],
    )
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_verify_checks_an_untouched_run_against_its_anchor(_tracked_walk_run, capsys):
    out, run_id = _tracked_walk_run()
    code, text, err = ledger("verify", str(out), capsys=capsys)
    assert code == 0, text + err
    assert text.startswith("OK: ") and "checked against its anchor in MLflow" in text
    for what in (
        "coins.f64 (6 rounds)",
        "rounds.jsonl",
        "participants.csv",
        "metrics.json",
        "checkpoint.npz",
        f"anchor: MLflow run {run_id} (6 rounds)",
    ):
        assert what in text, what


def test_a_forgery_with_every_hash_recomputed_is_caught_by_the_anchor(_tracked_walk_run, capsys):
    out, run_id = _tracked_walk_run()
    forge_credit(out)
    # the folder alone is consistent again: only the anchor outside it can tell
    code, text, _ = ledger("verify", str(out), "--no-anchor", capsys=capsys)
    assert code == 0 and "NOT anchored" in text
    code, text, _ = ledger("verify", str(out), capsys=capsys)
    assert code == 1
    assert text.strip() == (
        f"BAD: the ledger's head after round 2 differs from its anchor in "
        f"MLflow run {run_id} (the ledger was altered after it was recorded)"
    )
    # a folder that hides which run tracked it is still checked against a run named by hand
    (out / "mlflow_runs.json").unlink()
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["mlflow_run_id"] = None
    (out / "metrics.json").write_text(json.dumps(metrics))
    code, text, _ = ledger("verify", str(out), capsys=capsys)
    assert code == 0 and "NOT anchored" in text  # what verify cannot prove alone (README)
    code, text, _ = ledger("verify", str(out), "--run-id", run_id, capsys=capsys)
    assert code == 1 and "differs from its anchor" in text
    code, text, _ = ledger("verify", str(out), "--require-anchor", capsys=capsys)
    assert code == 1 and text.startswith("BAD: no anchor could be checked")


def drop_last_round(run_dir: Path) -> None:
    """Make a finished run look like one killed a round earlier, consistently in every file."""
    for name, keep in (("ledger.jsonl", -4), ("rounds.jsonl", -1), ("history.csv", -1)):
        lines = (run_dir / name).read_text().splitlines(keepends=True)
        (run_dir / name).write_text("".join(lines[:keep]))
    np.fromfile(run_dir / "coins.f64")[:-16].tofile(run_dir / "coins.f64")
    for name in ("metrics.json", "participants.csv", "checkpoint.npz"):
        (run_dir / name).unlink()


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda d: (d / "coins.f64").write_bytes(
                (np.fromfile(d / "coins.f64") + np.eye(1, 6 * 16, 40).ravel()).tobytes()
            ),
            "coins.f64, round 3: participant 8 holds",
        ),
        (
            lambda d: (d / "metrics.json").write_text(
                json.dumps({**json.loads((d / "metrics.json").read_text()), "coins_total": 1e6})
            ),
            "metrics.json: coins_total is 1000000.0, the ledger says",
        ),
        (
            lambda d: (d / "rounds.jsonl").write_text(
                (d / "rounds.jsonl").read_text().replace('"round": 4', '"round": 7')
            ),
            "rounds.jsonl: line 4 is not round 4",
        ),
        (lambda d: drop_last_round(d), "MLflow run"),
    ],
)
def test_every_reported_file_is_checked(_tracked_walk_run, capsys, edit, message):
    out, _ = _tracked_walk_run()
    edit(out)
    code, text, _ = ledger("verify", str(out), capsys=capsys)
    assert code == 1 and text.startswith("BAD") and message in text, text
    assert len(text.strip().splitlines()) == 1


def test_model_files_are_checked_against_their_commitments(finished_trained_run, tmp_path, capsys):
    import torch

    _, original = finished_trained_run
    run_dir = tmp_path / "run"
    shutil.copytree(original, run_dir)
    models = sorted((run_dir / "models").glob("*.pt"))
    best = torch.load(run_dir / "model.pt", weights_only=True)
    other = next(
        p
        for p in models
        if torch.load(p, weights_only=True).keys() == best.keys()
        and any(not torch.equal(torch.load(p, weights_only=True)[k], best[k]) for k in best)
    )
    shutil.copy(other, run_dir / "model.pt")  # a committed model, but not the run's best
    code, text, _ = ledger("verify", str(run_dir), "--no-anchor", capsys=capsys)
    assert code == 1 and "model.pt is not the run's best model" in text
    shutil.copy(original / "model.pt", run_dir / "model.pt")
    state = torch.load(models[0], weights_only=True)
    next(iter(state.values())).add_(1.0)
    from derelayl.protocol.trained import state_hash

    torch.save(state, run_dir / "models" / f"{state_hash(state)}.pt")  # stored, never committed
    code, text, _ = ledger("verify", str(run_dir), "--no-anchor", capsys=capsys)
    assert code == 1 and "was never committed in the ledger" in text


# -- diverging training ---------------------------------------------------------------------------
def test_a_diverging_hop_fails_and_the_run_goes_on(make_cfg, tmp_path, capsys):
    import torch

    out = tmp_path / "derelayl"
    metrics = run_experiment(
        make_cfg(*TINY_TRAINED, "algorithm.optimizer.lr=1e10", "tracking=none"), out
    )
    rows = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert sum(r["num_failed"] for r in rows) > 0 and metrics["rounds"] == 3
    assert all(r["num_winners"] <= r["num_trained"] for r in rows)
    committed = sum(
        len(json.loads(line)["payload"].get("models", []))
        for line in (out / "ledger.jsonl").read_text().splitlines()
    )
    assert committed == sum(r["num_trained"] for r in rows)  # failed hops are never committed
    code, text, _ = ledger("verify", str(out), capsys=capsys)
    assert code == 0, text  # the ledger holds no non-finite number
    for p in (out / "models").glob("*.pt"):
        assert all(torch.isfinite(t).all() for t in torch.load(p, weights_only=True).values())

    fl = run_experiment(
        make_cfg(
            "algorithm=fedavg",
            "algorithm.rounds=2",
            "num_participants=6",
            "algorithm.optimizer.lr=1e10",
            "tracking=none",
        ),
        tmp_path / "fedavg",
    )
    assert fl["failed_clients"] > 0
    relay = run_experiment(
        make_cfg(
            "algorithm=relay",
            "algorithm.rounds=1",
            "num_participants=6",
            "algorithm.optimizer.lr=1e10",
            "tracking=none",
        ),
        tmp_path / "relay",
    )
    assert relay["failed_hops"] == 6  # every hop diverged: the baton kept its start weights
    for name in ("fedavg", "relay"):
        state = torch.load(tmp_path / name / "model.pt", weights_only=True)
        assert all(torch.isfinite(t).all() for t in state.values()), name


class _SlowWriter:
    """A stand-in for the MLflow writer process whose replies come when the test says."""

    def __init__(self):
        self.uri, self.opened, self.sent, self.early = "sqlite:///x.db", False, [], []
        self.proc = type("P", (), {"wait": lambda self, timeout=None: 0})()

    def send(self, request):
        self.sent.append(request["op"])

    def answer(self, *replies):
        self.early.extend(replies)

    def answered(self):
        return len(self.early)

    def drain(self):
        self.sent.append("(drained)")

    def ready(self):
        if not self.opened:
            self.wait_for("ok")
            self.opened = True

    def wait_for(self, key, timeout=600.0):
        assert self.early, f"the tracker would block on {key!r} here"
        return self.early.pop(0).get(key)


def test_a_run_computes_while_the_writer_creates_its_mlflow_record():
    """The tracker asks for the run and goes on: its id (and the folder's note of it) comes at
    the first round end after the writer answered; closing consumes the replies in order."""
    from derelayl.io.mlflow import MlflowTracker

    writer, noted = _SlowWriter(), []
    tracker = MlflowTracker(writer, "exp")  # must not block: nothing answered yet
    tracker.on_started(noted.append)
    tracker.log_metrics({"acc": 0.5}, step=1)
    tracker.flush_due()
    assert tracker.known_run_id is None and noted == []
    writer.answer({"ok": "open"}, {"run_id": "abc"})
    tracker.flush_due()
    assert tracker.known_run_id == "abc" and noted == ["abc"]
    writer.answer({"ok": "end"})
    tracker.end("FINISHED")
    assert writer.sent[0] == "start" and writer.sent[-2:] == ["end", "(drained)"]
    assert writer.early == []


def test_a_signal_during_a_checkpoint_waits_until_the_file_is_whole(tmp_path, monkeypatch):
    """Regression: a SIGINT that arrived while numpy wrote checkpoint.npz was raised inside the
    zip writer, which then failed on close and hid the interruption (exit 1 and a traceback
    instead of the run closed as KILLED); now the signal waits until the file is complete."""
    import os
    import signal

    from derelayl.io import checkpoint
    from derelayl.io.signals import stop_on_signals
    from derelayl.sim.errors import RunInterrupted

    real = np.savez

    def savez_interrupted(fh, **arrays):
        os.kill(os.getpid(), signal.SIGINT)  # delivered while the checkpoint is being written
        real(fh, **arrays)

    monkeypatch.setattr(checkpoint.np, "savez", savez_interrupted)
    with pytest.raises(RunInterrupted), stop_on_signals():
        checkpoint.save_checkpoint(tmp_path / "c.npz", {"x": np.arange(3)})
    assert checkpoint.load_checkpoint(tmp_path / "c.npz")["x"].tolist() == [0, 1, 2]


def test_the_writer_closes_a_run_killed_mid_request_as_killed(tmp_path):
    """Regressions: a run SIGKILLed before it read the writer's answers (the writer still
    importing MLflow) made the answer fail with a broken pipe, and one killed while its sender
    thread wrote a request left half a line; either way the writer closed the record FAILED
    and wrote nothing more. Now what came before is written and the record closed KILLED."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    requests = [
        {"op": "open", "uri": uri},
        {"op": "start", "experiment": "e", "run_name": "r", "tags": {}, "stale": []},
        {"op": "log", "metrics": [["acc", 0.5, 0, 1], ["acc", 0.6, 0, 2]], "tags": {}},
    ]
    pipe = "".join(json.dumps(r) + "\n" for r in requests) + '{"op": "log", "metr'
    proc = subprocess.Popen(
        [sys.executable, "-m", "derelayl.io.mlflow_writer"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdout.close()  # the run is gone: nobody reads the answers
    proc.stdin.write(pipe)
    proc.stdin.close()
    assert proc.wait(timeout=120) == 0
    (run,) = runs_in(uri)
    assert run.info.status == "KILLED"
    history = MlflowClient(tracking_uri=uri).get_metric_history(run.info.run_id, "acc")
    assert [m.step for m in history] == [1, 2]
