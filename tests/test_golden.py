"""Behaviour preserved: fixed-seed runs of every algorithm give the numbers recorded in
tests/golden/ before the package was restructured (issue "One concept per room").

Each case is a small real run (tracking off, one torch thread); its metrics.json (less what
depends on the clock or the tracking run), a digest of its history.csv and, where computed, its
Shapley values must equal the record exactly. A change that is meant to change numbers updates
the record on purpose: ``DERELAYL_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py`` (and
says so in its commit).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from derelayl.app.pipeline import run_experiment

GOLDEN = Path(__file__).parent / "golden"
VOLATILE = {"wall_time_s", "mlflow_run_id"}
# the sequential path: the code the records were made with (batched execution agrees to float
# rounding: tests/test_batched_hop.py and tests/test_execution.py)
SMALL = ["tracking=none", "progress_every=1000", "algorithm.execution=sequential"]

CASES = {
    "derelayl_trained": ["derelayl.rounds=4", "shapley.enabled=true", "shapley.permutations=20"],
    "derelayl_random_walk": [
        "derelayl.performance=random_walk",
        "num_participants=64",
        "derelayl.rounds=60",
    ],
    "derelayl_random_walk_bounded": [
        "derelayl.performance=random_walk",
        "num_participants=40",
        "derelayl.rounds=40",
        "incentive=derelayl_bounded",
    ],
    "derelayl_population": [
        "derelayl.rounds=5",
        "churn.enabled=true",
        "churn.window=2",
        "participants.behaviour.free_rider=0.2",
        "participants.behaviour.noise=0.1",
        "participants.behaviour.label_flip=0.1",
        "shapley.enabled=false",
    ],
    "relay": ["algorithm=relay", "algorithm.rounds=1", "num_participants=8"],
    "relay_shapley": [
        "algorithm=relay",
        "algorithm.rounds=1",
        "num_participants=4",
        "shapley.enabled=true",
    ],
    "fedavg": ["algorithm=fedavg", "algorithm.rounds=4", "incentive=marginal_gain"],
    "fedprox": ["algorithm=fedprox", "algorithm.rounds=3", "algorithm.clients_per_round=4"],
    "scaffold": ["algorithm=scaffold", "algorithm.rounds=3", "algorithm.clients_per_round=4"],
    "fedavg_population": [
        "algorithm=fedavg",
        "algorithm.rounds=5",
        "incentive=derelayl",
        "churn.enabled=true",
        "churn.window=2",
        "participants.behaviour.dropout=0.2",
        "participants.behaviour.noise=0.1",
        "participants.behaviour.sybil=0.1",
    ],
    "fedavg_shapley": [
        "algorithm=fedavg",
        "algorithm.rounds=2",
        "num_participants=4",
        "algorithm.clients_per_round=2",
        "incentive=uniform",
        "shapley.enabled=true",
    ],
    "local": ["algorithm=local", "algorithm.rounds=2", "num_participants=6"],
    "centralized": ["algorithm=centralized", "algorithm.rounds=2"],
}


def record(out: Path) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    rec = {
        "metrics": {k: v for k, v in sorted(metrics.items()) if k not in VOLATILE},
        "history_sha256": hashlib.sha256((out / "history.csv").read_bytes()).hexdigest(),
    }
    if (out / "shapley.json").exists():
        rec["shapley"] = json.loads((out / "shapley.json").read_text())["values"]
    if (out / "coins.f64").exists():
        rec["coins_sha256"] = hashlib.sha256((out / "coins.f64").read_bytes()).hexdigest()
    return rec


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixed_seed_runs_keep_their_numbers(name, make_cfg, tmp_path):
    out = tmp_path / name
    run_experiment(make_cfg(*SMALL, *CASES[name]), out)
    got = record(out)
    path = GOLDEN / f"{name}.json"
    if os.environ.get("DERELAYL_UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(path.read_text())
    assert got["metrics"] == want["metrics"]
    assert got == want
