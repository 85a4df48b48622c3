"""Sweeps on real cluster engines, started on this machine (loopback only) by tests/engines.py:

- a one-node SLURM cluster (munge, slurmdbd on MariaDB, slurmctld, slurmd) running a sweep through
  the submitit preset (``hydra/launcher=slurm``), with a job cancelled by ``scancel``;
- a Ray head node running the same sweep through derelayl's Ray launcher
  (``hydra/launcher=ray_cluster``);
- a team MLflow server (PostgreSQL backend, artifact root, basic authentication) that the SLURM
  and Ray sweeps log to and that 8 concurrent jobs write to at once.

Marked ``cluster``: ``python -m pytest -m "not cluster"`` leaves them out. Where an engine is not
installed they skip, saying so; under CI (``CI`` set, and ``.ci/run`` installs the engines) they
fail instead.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import assert_one_line_error
from engines import (
    MlflowServer,
    RayHead,
    Slurm,
    free_port,
    postgres_bindir,
    slurm_missing,
    wait_for,
)

# tiny jobs: the relay, one round of 5 hops on digits (~1 s of work after the imports)
JOB = ("algorithm=relay", "algorithm.rounds=1", "num_participants=5", "progress_every=100")
SEEDS = (0, 1, 2, 3)
# what a job's run folder holds and MLflow must hold too (artifacts)
ARTIFACTS = {
    "config.yaml",
    "metrics.json",
    "history.csv",
    "partition.json",
    "model.pt",
    "accuracy_vs_hops.png",
}
# per-hop metrics of the relay, logged at step = hop (history.csv has them too)
HOP_KEYS = (
    "val_acc",
    "val_loss",
    "test_acc",
    "test_loss",
    "train_loss",
    "samples_seen",
    "bytes",
    "sim_time_s",
)
# metrics.json values that differ between two runs of the same config
RUN_SPECIFIC = ("wall_time_s", "mlflow_run_id")


def require(missing: list[str], what: str) -> None:
    if not missing:
        return
    message = f"{what}: {', '.join(missing)} not installed (bash .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def modules_missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


# -- engines -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlflow_server():
    require(
        ([] if postgres_bindir() else ["postgresql"]) + modules_missing("psycopg", "flask_wtf"),
        "team MLflow server",
    )
    with MlflowServer() as server:
        yield server


@pytest.fixture
def slurm():
    require(slurm_missing() + modules_missing("hydra_plugins.hydra_submitit_launcher"), "SLURM")
    with Slurm() as cluster:
        yield cluster


@pytest.fixture
def ray_head():
    require(modules_missing("ray"), "Ray")
    with RayHead() as head:
        yield head


# -- helpers -----------------------------------------------------------------------------------
def train_cmd(tmp: Path, server: MlflowServer, experiment: str, *args: str) -> list[str]:
    flags = [a for a in args if a.startswith("-")]
    rest = [a for a in args if not a.startswith("-")]
    return [
        sys.executable,
        "-m",
        "derelayl.cli.train",
        *flags,
        f"paths.root_dir={tmp}",
        "tracking=server",
        f"tracking.uri={server.uri}",
        f"tracking.experiment={experiment}",
        *rest,
    ]


def run_train(
    cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=dict(env, HYDRA_FULL_ERROR="0"),
        cwd=cwd,
        timeout=timeout,
    )


@pytest.fixture
def client(mlflow_server, monkeypatch):
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, mlflow_server.env[key])
    return MlflowClient(tracking_uri=mlflow_server.uri)


def sweep_children(client: MlflowClient, sweep: Path) -> tuple[str, list]:
    parent = json.loads((sweep / "sweep.json").read_text())["parent_run_id"]
    exp = client.get_run(parent).info.experiment_id
    return parent, client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent}'")


def assert_one_finished_run_per_job(client: MlflowClient, sweep: Path, n: int) -> list:
    """Every job of the sweep is one FINISHED child run of its parent (a cancelled or killed
    attempt may leave a KILLED one, never a second FINISHED one); the parent is FINISHED."""
    parent, children = sweep_children(client, sweep)
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert sorted(r.info.status for r in children if r not in finished) in ([], ["KILLED"])
    assert sorted(int(r.data.params["seed"]) for r in finished) == list(range(n))
    ids = {
        json.loads((sweep / str(k) / "metrics.json").read_text())["mlflow_run_id"] for k in range(n)
    }
    assert ids == {r.info.run_id for r in finished}  # each folder's run is the one in MLflow
    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED"
    assert parent_run.data.metrics["sweep/jobs_finished"] == n
    return finished


def local_reference(make_cfg, tmp: Path, seed: int) -> Path:
    """The same job run in this process, without tracking."""
    from derelayl.app.pipeline import run_experiment

    out = tmp / f"local-{seed}"
    run_experiment(make_cfg(*JOB, f"seed={seed}", "tracking=none"), out)
    return out


def assert_same_numbers(a: Path, b: Path) -> None:
    """Same config + seed = same numbers, whichever machine or engine ran the job."""
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (a, b))
    for key in RUN_SPECIFIC:
        ma.pop(key), mb.pop(key)
    assert ma == mb, (a, b)
    wa, wb = (torch.load(p / "model.pt", weights_only=True) for p in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), (a, b)


# -- fast, no engine ---------------------------------------------------------------------------
def test_hydra_finds_the_ray_launcher_plugin():
    """The preset's target is a plugin Hydra discovers (its module imports no ray)."""
    import yaml
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    from derelayl.cli.train import config_dir

    preset = yaml.safe_load((config_dir() / "hydra/launcher/ray_cluster.yaml").read_text())
    found = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Launcher)}
    assert preset["_target_"] in found


def test_ray_sweep_without_a_cluster_is_one_line(tmp_path):
    """A wrong address: one line and exit status 2 at once, not Ray's minutes of retries."""
    require(modules_missing("ray"), "Ray")
    port = free_port()  # nothing listens there
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "derelayl.cli.train",
            "-m",
            "hydra/launcher=ray_cluster",
            *JOB,
            "tracking=none",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, RAY_ADDRESS=f"127.0.0.1:{port}", HYDRA_FULL_ERROR="0"),
        cwd=tmp_path,
        timeout=120,
    )
    assert_one_line_error(
        proc.returncode,
        proc.stderr,
        f"derelayl-train: error: no Ray cluster answers at 127.0.0.1:{port}",
    )
    assert not list(tmp_path.glob("sweep/*/metrics.json"))


# -- SLURM -------------------------------------------------------------------------------------
@pytest.mark.cluster
def test_slurm_sweep_finishes_and_a_cancelled_job_is_redone(
    slurm, mlflow_server, client, make_cfg, tmp_path
):
    sweep = tmp_path / "sweep"
    cmd = train_cmd(
        tmp_path,
        mlflow_server,
        "slurm",
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=10",
        *JOB,
        "seed=" + ",".join(map(str, SEEDS)),
        f"hydra.sweep.dir={sweep}",
    )
    # SLURM_CONF for the clients, MLflow's credentials (sbatch hands the environment to jobs)
    env = {**slurm.env, **{k: v for k, v in mlflow_server.env.items() if k.startswith("MLFLOW")}}

    started = time.monotonic()
    first = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env, HYDRA_FULL_ERROR="0"),
        cwd=tmp_path,
    )
    try:
        # the array's last job, cancelled once it runs (the test cluster runs all 4 at once; a
        # job's imports alone take seconds, so it is cancelled before it finishes)
        def running(task: str) -> str | None:
            for line in slurm.cmd("squeue", "-h", "-r", "-o", "%i %T").splitlines():
                job, state = line.split()
                if job.endswith(f"_{task}") and state == "RUNNING":
                    return job
            return None

        wait_for(
            lambda: running("3") is not None, 240, "SLURM job 3 to run (the launch)", procs=[first]
        )
        cancelled = running("3")
        slurm.cmd("scancel", cancelled)
        print(f"SLURM: job 3 running and cancelled after {time.monotonic() - started:.1f} s")
        out, err = first.communicate(timeout=300)
        print(f"SLURM: first launch ended after {time.monotonic() - started:.1f} s")
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode != 0, "the cancelled job fails the launch"
    assert f"Job {cancelled} " in err and "(state: CANCELLED" in err, err[-3000:]
    state = slurm.cmd("sacct", "-n", "-X", "-P", "-o", "State", "-j", cancelled).split()
    assert state and state[0].startswith("CANCELLED"), state
    done = {k: (sweep / str(k) / "metrics.json").read_bytes() for k in SEEDS[:3]}
    assert not (sweep / "3/metrics.json").exists()

    # the same command again: only the cancelled job trains, the finished ones are kept
    started = time.monotonic()
    second = run_train(cmd, env, tmp_path)
    print(f"SLURM: rerun {time.monotonic() - started:.1f} s")
    assert second.returncode == 0, second.stderr[-3000:]
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.*"))
    assert logs.count("skipped: ") == 3, logs[-3000:]
    for k, before in done.items():
        assert (sweep / str(k) / "metrics.json").read_bytes() == before
    assert_one_finished_run_per_job(client, sweep, len(SEEDS))
    for seed in SEEDS:  # numbers independent of the engine that ran the job
        assert_same_numbers(sweep / str(seed), local_reference(make_cfg, tmp_path, seed))


# -- Ray ---------------------------------------------------------------------------------------
@pytest.mark.cluster
def test_ray_sweep_finishes_with_the_numbers_of_a_local_run(
    ray_head, mlflow_server, client, make_cfg, tmp_path
):
    # a sweep folder relative to where it is launched, as by default: each job runs there
    sweep = tmp_path / "sweep"
    cmd = train_cmd(
        tmp_path,
        mlflow_server,
        "ray",
        "-m",
        "hydra/launcher=ray_cluster",
        *JOB,
        "seed=" + ",".join(map(str, SEEDS)),
        "hydra.sweep.dir=sweep",
    )
    # the jobs get MLflow's credentials from the launching shell (hydra.launcher.ray.env_vars),
    # not from the Ray daemons' environment
    env = {
        **ray_head.env,
        **{k: v for k, v in mlflow_server.env.items() if k.startswith("MLFLOW")},
        "RAY_ADDRESS": ray_head.address,
    }
    assert "MLFLOW_TRACKING_PASSWORD" not in ray_head.env
    started = time.monotonic()
    proc = run_train(cmd, env, tmp_path)
    print(f"Ray sweep of {len(SEEDS)} jobs: {time.monotonic() - started:.1f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert f"sweep progress: {len(SEEDS)}/{len(SEEDS)} jobs done" in log  # jobs' lines reach us
    assert_one_finished_run_per_job(client, sweep, len(SEEDS))
    for seed in SEEDS:
        assert_same_numbers(sweep / str(seed), local_reference(make_cfg, tmp_path, seed))

    # bad input in a job: one line, exit status 2 (resuming is engine-independent: the SLURM test)
    started = time.monotonic()
    bad = run_train(
        train_cmd(
            tmp_path,
            mlflow_server,
            "ray",
            "-m",
            "hydra/launcher=ray_cluster",
            *JOB,
            "num_participants=0",
            "hydra.sweep.dir=bad",
        ),
        env,
        tmp_path,
    )
    assert bad.returncode == 2, bad.stderr[-3000:]
    lines = [ln for ln in (bad.stdout + bad.stderr).splitlines() if ln.strip()]
    # the sweep's jobs are checked before any starts: the line names the job and the value
    assert (
        lines[-1].startswith("derelayl-train: error: ")
        and "num_participants must be >= 1" in lines[-1]
    ), lines[-3:]
    assert "Traceback" not in bad.stdout + bad.stderr
    print(f"Ray sweep, bad input: {time.monotonic() - started:.1f} s")


# -- a team MLflow server ----------------------------------------------------------------------
@pytest.mark.cluster
def test_team_server_takes_eight_concurrent_jobs(mlflow_server, client, tmp_path):
    sweep, n = tmp_path / "sweep", 8
    env = {**os.environ, **mlflow_server.env, "DERELAYL_JOBS": str(n)}
    started = time.monotonic()
    proc = run_train(
        train_cmd(
            tmp_path,
            mlflow_server,
            "team",
            "-m",
            "hydra/launcher=parallel",
            *JOB,
            "seed=" + ",".join(map(str, range(n))),
            f"hydra.sweep.dir={sweep}",
        ),
        env,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"8 concurrent jobs against the server: {time.monotonic() - started:.1f} s")
    runs = assert_one_finished_run_per_job(client, sweep, n)
    parent, _ = sweep_children(client, sweep)

    for run in runs:
        folder = sweep / run.data.params["seed"]
        metrics = json.loads((folder / "metrics.json").read_text())
        # every number: the summary keys, and each hop's values
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                assert run.data.metrics[f"final/{key}"] == pytest.approx(value), key
        with (folder / "history.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == metrics["hops"]
        for key in HOP_KEYS:  # each hop's value, at its step
            logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
            assert logged == pytest.approx({int(r["hop"]): float(r[key]) for r in rows}), key
        # every artifact: listed by the server, byte for byte in its artifact root
        listed = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert listed >= ARTIFACTS, ARTIFACTS - listed
        stored = mlflow_server.artifacts / run.info.experiment_id / run.info.run_id / "artifacts"
        for name in listed:
            assert sha256(stored / name) == sha256(folder / name), name
    # and served back through the API
    one = runs[0]
    got = client.download_artifacts(one.info.run_id, "metrics.json", str(tmp_path / "dl"))
    assert Path(got).read_bytes() == (sweep / one.data.params["seed"] / "metrics.json").read_bytes()

    # the study report reads the study back from the server
    from derelayl.cli.report import main as report_main

    report_main(
        [
            "--tracking-uri",
            mlflow_server.uri,
            "--experiment",
            "team",
            "--parent-run",
            parent,
            "--out",
            str(tmp_path / "report"),
        ]
    )
    summary = json.loads((tmp_path / "report/summary.json").read_text())
    (group,) = summary.values()  # one method, 8 seeds
    accs = [json.loads((sweep / str(k) / "metrics.json").read_text())["test_acc"] for k in range(n)]
    assert group["runs"] == n
    assert group["test_acc"]["mean"] == pytest.approx(sum(accs) / n)

    # the server is not open: no credentials, no data
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(
            f"{mlflow_server.uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name=team",
            timeout=10,
        )
    assert refused.value.code == 401


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
