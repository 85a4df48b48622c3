"""`derelayl-train` end to end, as a user runs it: files, MLflow, determinism, bad input."""

import json
import math
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from conftest import assert_one_line_error
from derelayl.app.pipeline import run_experiment

VOLATILE = {"wall_time_s", "mlflow_run_id"}


def test_default_run_writes_everything_and_logs_to_mlflow(cli, tmp_path):
    out = tmp_path / "run"
    proc = cli("algorithm=relay", "algorithm.rounds=2", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    assert "hop 40/40" in proc.stdout + proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_acc", "test_loss", "hops", "rounds", "wall_time_s", "mlflow_run_id"):
        assert key in metrics
    assert metrics["hops"] == 40 and metrics["rounds"] == 2
    for name in (
        "config.yaml",
        "history.csv",
        "model.pt",
        "accuracy_vs_hops.png",
        "partition.json",
    ):
        assert (out / name).stat().st_size > 0, name
    assert len((out / "history.csv").read_text().splitlines()) == 41

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(metrics["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["partition.alpha"] == "0.5"
    assert run.data.params["num_participants"] == "20"
    assert run.data.params["algorithm.optimizer.lr"] == "0.02"
    assert run.data.tags["dataset"] == "digits"
    val = client.get_metric_history(run.info.run_id, "val_acc")
    assert sorted(m.step for m in val) == list(range(1, 41))
    assert math.isclose(run.data.metrics["final/test_acc"], metrics["test_acc"])
    for key in ("test_acc", "participant", "samples_seen"):
        assert key in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "config.yaml",
        "metrics.json",
        "history.csv",
        "accuracy_vs_hops.png",
        "model.pt",
        "partition.json",
    } <= artifacts


def test_same_config_and_seed_give_identical_numbers(cli, tmp_path):
    args = (
        "algorithm=relay",
        "dataset=mnist1d",
        "dataset.num_samples=1000",
        "partition=shards",
        "schedule=random",
        "num_participants=10",
        "algorithm.rounds=2",
        "seed=3",
        "tracking=none",
    )
    a = cli(*args, f"hydra.run.dir={tmp_path}/a")
    b = cli(*args, f"hydra.run.dir={tmp_path}/b")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    ma = json.loads((tmp_path / "a/metrics.json").read_text())
    mb = json.loads((tmp_path / "b/metrics.json").read_text())
    assert {k: v for k, v in ma.items() if k not in VOLATILE} == {
        k: v for k, v in mb.items() if k not in VOLATILE
    }
    assert (tmp_path / "a/history.csv").read_text() == (tmp_path / "b/history.csv").read_text()


@pytest.mark.slow  # end to end through subprocesses (20 s or more): CI runs it
def test_multirun_sweep_lands_in_one_experiment(cli, tmp_path):
    proc = cli(
        "-m",
        "algorithm=relay",
        "partition.alpha=0.1,1.0",
        "num_participants=5",
        "algorithm.rounds=1",
        f"hydra.sweep.dir={tmp_path}/sweep",
        "tracking.experiment=sweep-test",
    )
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("sweep-test")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.data.tags.get("derelayl.sweep") == "parent"]
    runs = [r for r in runs if r not in parent]  # the jobs are the sweep's child runs
    assert len(parent) == 1
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent[0].info.run_id}
    assert sorted(r.data.params["partition.alpha"] for r in runs) == ["0.1", "1.0"]
    assert all((tmp_path / "sweep" / str(i) / "metrics.json").exists() for i in (0, 1))


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["partition=foo"],
            "unknown partition 'foo'; allowed: dirichlet, dirichlet_0.1, dirichlet_0.5",
        ),
        (["-m", "schedule=ring,spiral"], "unknown schedule 'spiral'; allowed: largest_first"),
        (["partition.alpha=-0.5"], "partition.alpha must be > 0 (got -0.5)"),
        (["num_participants=5000"], "num_participants=5000"),
        (["partition=shards", "partition.classes_per_participant=11"], "allowed: 1..10"),
        (["dataset=cifar10"], "dataset.download=true"),
        (["algorithm=relay", "algorithm.rounds=0"], "algorithm.rounds must be >= 1"),
    ],
)
def test_bad_input_is_one_clear_line(cli_in_process, tmp_path, args, message):
    code, out, err = cli_in_process(*args, "tracking=none", f"hydra.run.dir={tmp_path}/bad")
    assert_one_line_error(code, err, message)


def test_digits_relay_reaches_085(make_cfg, tmp_path):
    metrics = run_experiment(make_cfg("algorithm=relay", "tracking=none"), tmp_path / "run")
    assert metrics["test_acc"] >= 0.85


@pytest.mark.parametrize(
    "overrides",
    [
        ["partition=iid"],
        ["partition=quantity"],
        ["partition=feature_noise"],
        ["partition=shards", "schedule=largest_first"],
        ["model=cnn"],
        ["experiment=mnist1d_shards", "dataset.num_samples=600", "num_participants=10"],
        ["algorithm.local_steps=3", "algorithm.eval_every=5"],
    ],
)
def test_every_option_runs(make_cfg, tmp_path, overrides):
    cfg = make_cfg("algorithm=relay", "algorithm.rounds=1", "debug=fast", *overrides)
    metrics = run_experiment(cfg, tmp_path / "run")
    assert 0.0 <= metrics["test_acc"] <= 1.0
    assert metrics["hops"] == cfg.num_participants


def test_bad_input_from_a_real_process_has_no_traceback(cli, tmp_path):
    proc = cli("partition.alpha=0", "tracking=none", f"hydra.run.dir={tmp_path}/bad")
    assert proc.returncode == 2
    # partition.alpha is a float (its schema): 0 arrives as 0.0
    assert proc.stderr.strip() == "derelayl-train: error: partition.alpha must be > 0 (got 0.0)"


def _argv_imports(tmp_path, *args: str) -> tuple[int, str, list[str]]:
    """``derelayl-train <args>`` in a fresh interpreter: exit code, stdout, and which of the
    heavy packages (torch, Lightning, MLflow) it imported on the way."""
    probe = (
        "import sys\n"
        "from derelayl.cli.train import main\n"
        f"sys.argv = ['derelayl-train', *{list(args)!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
        "heavy = [m for m in ('torch', 'pytorch_lightning', 'mlflow') if m in sys.modules]\n"
        "print('HEAVY', ','.join(heavy), 'CODE', code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    last = proc.stdout.strip().splitlines()[-1].split()
    heavy = last[1].split(",") if last[1] != "CODE" else []
    return int(last[-1]), proc.stdout, heavy


def test_help_and_bad_input_answer_without_loading_torch(tmp_path):
    """--help and a bad value are answered before torch, Lightning or MLflow load (the page and
    the checks need the config's schemas only): they take well under 2 s."""
    code, out, heavy = _argv_imports(tmp_path, "algorithm=fedavg", "seed=7", "--help")
    assert code == 0 and heavy == [], heavy
    assert "== Config groups" in out and "algorithm: centralized, derelayl, fedadam" in out
    assert "seed: 7" in out and "derelayl.app.runners.fl.Federated" in out  # this config
    assert "schema/" not in out  # the schemas are not options to choose
    code, out, heavy = _argv_imports(tmp_path, "partition.alpha=-1", "tracking=none")
    assert code == 2 and heavy == [], heavy
    assert "loading PyTorch" not in out  # the refusal is the only line: nothing was loaded


def test_help_of_a_sweep_says_it_is_not_one_config(cli_in_process):
    code, out, _ = cli_in_process("-m", "seed=0,1", "--help")
    assert code == 0 and "does not compose" in out and "== Config groups" in out


def test_the_spare_mlflow_writer_is_taken_by_a_tracked_run_and_ended_otherwise(tmp_path):
    # derelayl-train starts it first thing, so MLflow's import overlaps Hydra's and PyTorch's
    from derelayl.io import mlflow as tracking

    tracking.start_spare_writer()
    spare = tracking._spare
    writer = tracking.open_writer(f"sqlite:///{tmp_path}/mlflow.db")
    assert writer is spare and tracking._spare is None
    writer.ready()  # a store this run would create: opened without creating it
    writer.close()
    assert not (tmp_path / "mlflow.db").exists()

    tracking.start_spare_writer()
    spare = tracking._spare
    assert spare is not None
    tracking.discard_spare_writer()  # a run without tracking, or a refused one
    assert spare.proc.poll() is not None and tracking._spare is None
    tracking.discard_spare_writer()  # (nothing to end: a no-op)


def test_a_refused_run_leaves_no_writer_process(cli_in_process, tmp_path, monkeypatch):
    from derelayl.io import mlflow as tracking

    started = []
    monkeypatch.setattr(
        tracking,
        "WriterProcess",
        lambda *a, _cls=tracking.WriterProcess: started.append(_cls(*a)) or started[-1],
    )
    code, _, err = cli_in_process("seed=-1", f"hydra.run.dir={tmp_path}/run")
    assert code == 2 and "seed must be" in err
    assert started and all(w.proc.poll() is not None for w in started)
    assert tracking._spare is None


def test_a_sweep_starts_no_spare_writer(cli_in_process, tmp_path, monkeypatch):
    # (its jobs start their own; a spare would idle for the whole sweep)
    from derelayl.io import mlflow as tracking

    started = []
    monkeypatch.setattr(tracking, "start_spare_writer", lambda: started.append(1))
    code, _, err = cli_in_process("-m", "seed=0,x", f"hydra.sweep.dir={tmp_path}/sweep")
    assert code == 2 and "seed must be" in err and not started
