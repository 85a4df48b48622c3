"""What run integrity costs: per-round checkpoints of the relay and FL, and flushing metrics to
MLflow as a run goes (``tracking.flush_every_s``).

    python benchmarks/integrity_overhead.py            # ~2 minutes on 2 busy cores

Each configuration runs in this process, with tracking into a temporary sqlite store; times are
wall-clock seconds of ``run_experiment`` (best of ``--repeat``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from derelayl.app.pipeline import run_experiment
from derelayl.cli.train import config_dir
from derelayl.io.checkpoint import RoundCheckpoint

_RUNS = iter(range(10**6))


def timed(tmp: Path, name: str, overrides: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        i = next(_RUNS)  # every run its own folder
        base = [
            f"paths.data_dir={tmp}/data",
            f"tracking.uri=sqlite:///{tmp}/mlflow.db",
            f"tracking.artifact_location={tmp}/art",
            "progress_every=100000",
        ]
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name="train", overrides=base + overrides)
        started = time.perf_counter()
        run_experiment(cfg, tmp / f"{name}-{i}")
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        timed(tmp, "warm", ["algorithm=relay", "algorithm.rounds=1", "tracking=none"], 1)
        for label, overrides in (
            ("relay, 20 participants x 5 rounds", ["algorithm=relay", "tracking=none"]),
            ("fedavg, default budget", ["algorithm=fedavg", "tracking=none"]),
        ):
            on = timed(tmp, "on", overrides, args.repeat)
            saved = RoundCheckpoint.on_round
            RoundCheckpoint.on_round = lambda self, record: None
            try:
                off = timed(tmp, "off", overrides, args.repeat)
            finally:
                RoundCheckpoint.on_round = saved
            print(
                f"{label}: {on:.2f}s with a checkpoint every round, {off:.2f}s without "
                f"({100 * (on - off) / off:+.1f}%)"
            )
        walk = ["derelayl.performance=random_walk", "num_participants=64", "derelayl.rounds=2000"]
        for flush in (0.0, 1.0, 1e9):
            t = timed(tmp, f"flush{flush}", walk + [f"tracking.flush_every_s={flush}"], args.repeat)
            what = {
                0.0: "every round",
                1.0: "at most once a second (default)",
                1e9: "only at the end",
            }[flush]
            print(f"random walk, N=64 x 2000 rounds, tracked, metrics flushed {what}: {t:.2f}s")


if __name__ == "__main__":
    main()
