"""Sweeps beyond one process: launcher and sweeper presets compose (they run on real engines in
tests/test_cluster.py), an Optuna search runs, a sweep groups its jobs under one MLflow parent run
and resumes after a kill."""

import importlib.util
import json

import pytest
import yaml
from mlflow.tracking import MlflowClient


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def needs(module: str, extra: str):
    return pytest.mark.skipif(
        not installed(module), reason=f"{module} not installed (pip install 'derelayl[{extra}]')"
    )


@pytest.mark.parametrize(
    "override, target, keys",
    [
        pytest.param(
            "hydra/launcher=parallel",
            "hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
            {"n_jobs": -1, "backend": "loky"},
            marks=needs("hydra_plugins.hydra_joblib_launcher", "test"),
        ),
        pytest.param(
            "hydra/launcher=slurm",
            "hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
            {"cpus_per_task": 1, "timeout_min": 120, "array_parallelism": 64},
            marks=needs("hydra_plugins.hydra_submitit_launcher", "cluster"),
        ),
        # derelayl's own Ray launcher: composes whether or not ray is installed
        pytest.param(
            "hydra/launcher=ray_cluster",
            "derelayl_ray_launcher.ray_launcher.RayLauncher",
            {
                "ray": {
                    "init": {"address": "auto"},
                    "remote": {"num_cpus": 1, "num_gpus": 0, "max_retries": 1},
                    "env_vars": [
                        "MLFLOW_TRACKING_URI",
                        "MLFLOW_TRACKING_USERNAME",
                        "MLFLOW_TRACKING_PASSWORD",
                        "MLFLOW_TRACKING_TOKEN",
                        "MLFLOW_TRACKING_INSECURE_TLS",
                        "MLFLOW_TRACKING_SERVER_CERT_PATH",
                    ],
                }
            },
        ),
    ],
)
def test_launcher_presets_compose(cli, tmp_path, override, target, keys):
    proc = cli(override, "--cfg=all", "--resolve")
    assert proc.returncode == 0, proc.stderr
    launcher = yaml.safe_load(proc.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith(target)
    for key, value in keys.items():
        assert launcher[key] == value, key


@needs("hydra_plugins.hydra_optuna_sweeper", "cluster")
def test_optuna_preset_composes_and_tunes_relay(cli, tmp_path):
    sweep = tmp_path / "optuna"
    proc = cli(
        "hparams_search=optuna_relay",
        "hydra.sweeper.n_trials=2",
        "num_participants=5",
        "algorithm.rounds=1",
        "progress_every=100",
        "tracking.experiment=tune",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stderr
    sweeper = yaml.safe_load((sweep / "0/.hydra/hydra.yaml").read_text())["hydra"]["sweeper"]
    assert sweeper["_target_"].endswith("OptunaSweeper") and sweeper["direction"] == "maximize"
    assert set(sweeper["params"]) == {"algorithm.optimizer.lr", "algorithm.local_epochs"}
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert 0 < result["best_value"] <= 1  # the validation accuracy derelayl-train returns
    assert "sweep progress: 2/2 jobs done" in proc.stderr + proc.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tune").experiment_id])
    parent = [r for r in runs if r.data.tags.get("derelayl.sweep") == "parent"]
    assert len(parent) == 1 and len(runs) == 3
    # Optuna maximised the validation accuracy (optimized_metric), never the test accuracy
    assert parent[0].data.metrics["best/val_acc"] == pytest.approx(result["best_value"])
    trials = [yaml.safe_load((sweep / f"{i}/.hydra/config.yaml").read_text()) for i in (0, 1)]
    assert {t["optimized_metric"] for t in trials} == {"val_acc"}
    vals = [json.loads((sweep / f"{i}/metrics.json").read_text()) for i in (0, 1)]
    assert result["best_value"] == pytest.approx(max(m["val_acc"] for m in vals))


@pytest.mark.slow  # end to end through subprocesses (20 s or more): CI runs it
def test_interrupted_sweep_resumes_without_redoing_finished_jobs(cli, tmp_path):
    sweep = tmp_path / "sweep"
    args = (
        "-m",
        "algorithm=relay",
        "seed=0,1",
        "num_participants=5",
        "algorithm.rounds=1",
        "progress_every=100",
        "tracking.experiment=resume",
        f"hydra.sweep.dir={sweep}",
    )
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    assert "sweep progress: 2/2 jobs done" in first.stdout + first.stderr
    state = json.loads((sweep / "sweep.json").read_text())
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    # simulate a kill during job 1: no metrics.json, its MLflow run never ended
    killed = json.loads((sweep / "1/metrics.json").read_text())["mlflow_run_id"]
    (sweep / "1/metrics.json").unlink()
    (sweep / ".done/1").unlink()
    client.update_run(killed, status="RUNNING")
    before = (sweep / "0/metrics.json").read_text()

    second = cli(*args)
    assert second.returncode == 0, second.stderr
    log = second.stdout + second.stderr
    assert "resuming, 1 job(s) already done" in log
    assert "skipped: " in log and f"{sweep}/0 already holds a finished run" in log
    assert log.count("done: test_acc") == 1  # only job 1 trained again
    assert (sweep / "0/metrics.json").read_text() == before
    assert json.loads((sweep / "sweep.json").read_text())["parent_run_id"] == state["parent_run_id"]
    runs = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    status = {r.info.run_id: r.info.status for r in runs}
    assert status[killed] == "KILLED" and status[state["parent_run_id"]] == "FINISHED"
    assert sorted(status.values()) == ["FINISHED", "FINISHED", "FINISHED", "KILLED"]


def test_changed_config_is_not_skipped_and_does_not_overwrite(make_cfg, tmp_path):
    from derelayl.app.pipeline import run_experiment
    from derelayl.sim.errors import ConfigError

    out = tmp_path / "run"
    relay = ("algorithm=relay", "algorithm.rounds=1", "debug=fast")
    first = run_experiment(make_cfg(*relay), out)
    again = run_experiment(make_cfg(*relay), out)
    assert again == first  # returned from metrics.json, not retrained
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # one run, one folder: another config is refused, and the finished run stays as it was
    with pytest.raises(ConfigError, match="different config .*algorithm.optimizer.lr"):
        run_experiment(make_cfg(*relay, "algorithm.optimizer.lr=0.05"), out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
