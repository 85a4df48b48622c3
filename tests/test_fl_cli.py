"""The baselines through ``derelayl-train``: one sweep over every method, MLflow, bad input."""

import json

import pytest
from mlflow.tracking import MlflowClient

from conftest import assert_one_line_error
from derelayl.app.pipeline import run_experiment

METHODS = ("fedavg", "fedprox", "scaffold", "local", "centralized")


@pytest.mark.slow  # end to end through subprocesses (a minute or more): CI runs it
def test_one_sweep_runs_every_baseline_and_logs_rounds_to_mlflow(cli, tmp_path):
    proc = cli(
        "-m",
        f"algorithm={','.join(METHODS)}",
        "debug=fast",
        "++algorithm.rounds=null",
        "++algorithm.budget_epochs=2",
        "tracking=mlflow",
        "tracking.experiment=fl-test",
        f"hydra.sweep.dir={tmp_path}/sweep",
    )
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("fl-test").experiment_id])
    runs = [r for r in runs if "mlflow.parentRunId" in r.data.tags]  # the sweep's jobs
    # what a run is: the group options it was composed from (Hydra's choices), as tags
    assert sorted(r.data.tags["algorithm"] for r in runs) == sorted(METHODS)
    assert {r.data.tags["partition"] for r in runs} == {"dirichlet"}
    for i, method in enumerate(METHODS):
        out = tmp_path / "sweep" / str(i)
        metrics = json.loads((out / "metrics.json").read_text())
        for key in (
            "test_acc",
            "samples_seen",
            "bytes",
            "sim_time_s",
            "rounds",
            "sim_time_to_target_s",
        ):
            assert key in metrics, (method, key)
        assert (out / "accuracy_vs_rounds.png").stat().st_size > 0
        rows = (out / "history.csv").read_text().splitlines()
        # the sample budget, 2 epochs over the 5 participants' data, within half a round
        total = sum(json.loads((out / "partition.json").read_text())["sizes"])
        seen = [0] + [int(r.split(",")[2]) for r in rows[1:]]
        assert seen[-1] == metrics["samples_seen"]
        assert abs(seen[-1] - 2 * total) <= (seen[-1] - seen[-2]) / 2
        assert rows[0].startswith("round,hops,samples_seen") and len(rows) == metrics["rounds"] + 1
        run = client.get_run(metrics["mlflow_run_id"])
        assert run.data.params["algorithm.step_unit"] == "round"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert steps == list(range(1, metrics["rounds"] + 1))
        assert "by_samples/test_acc" in run.data.metrics and "bytes" in run.data.metrics
    local = json.loads((tmp_path / "sweep/3/metrics.json").read_text())
    assert local["test_acc_worst"] <= local["test_acc"] and local["bytes"] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["algorithm=fedprox", "algorithm.mu=-0.1"], "algorithm.mu must be >= 0 (got -0.1)"),
        (
            ["algorithm=fedavg", "algorithm.clients_per_round=0"],
            "algorithm.clients_per_round must be in 1..20 (num_participants) (got 0)",
        ),
    ],
)
def test_bad_baseline_input_is_one_clear_line(cli_in_process, tmp_path, args, message):
    code, out, err = cli_in_process(*args, "tracking=none", f"hydra.run.dir={tmp_path}/bad")
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "bad" / "metrics.json").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["algorithm=fedavg", "algorithm.server_lr=-1"], "algorithm.server_lr must be > 0"),
        (["algorithm=local", "algorithm.sample_budget=0"], "algorithm.sample_budget must be >= 1"),
        (["algorithm=fedavg", "algorithm.clients_per_round=21"], "must be in 1..20"),
        (["algorithm=centralized", "algorithm.budget_epochs=0"], "budget_epochs must be > 0"),
        (["algorithm=scaffold", "algorithm.optimizer.momentum=0.9"], "momentum=0"),
        (["algorithm=fedprox", "algorithm.batch_size=0"], "batch_size must be >= 1"),
        (["algorithm=scaffold", "algorithm.client_fraction=0"], "client_fraction must be in"),
        (
            ["algorithm=centralized", "participants.devices.speed_median=0"],
            "participants.devices.speed_median must be > 0",
        ),
    ],
)
def test_bad_baseline_values_are_rejected_before_anything_runs(
    make_cfg, tmp_path, overrides, message
):
    from derelayl.sim.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        run_experiment(make_cfg("tracking=none", *overrides), tmp_path / "run")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_relay_reports_bytes_and_simulated_time(make_cfg, tmp_path):
    metrics = run_experiment(
        make_cfg("algorithm=relay", "algorithm.rounds=1", "debug=fast", "num_participants=5"),
        tmp_path / "run",
    )
    assert metrics["hops"] == 5 and metrics["bytes"] == 5 * 4 * (64 * 128 + 128 + 1280 + 10)
    assert metrics["sim_time_s"] > 0
    header = (tmp_path / "run/history.csv").read_text().splitlines()[0].split(",")
    assert header[-3:] == ["bytes", "sim_time_s", "failed"]  # failed: a diverged hop


def test_baselines_reach_the_relay_ballpark_on_iid_digits(make_cfg, tmp_path):
    acc = {
        m: run_experiment(
            make_cfg("tracking=none", "partition=iid", f"algorithm={m}"), tmp_path / m
        )["test_acc"]
        for m in ("fedavg", "centralized")
    }
    assert acc["centralized"] >= 0.9 and acc["fedavg"] >= 0.8, acc
