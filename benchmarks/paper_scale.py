"""``experiment=paper_scale`` end to end: wall time and accuracy of the authors' N = 256 with
real training (MNIST-1D, the CNN, trained DeRelayL, 100 rounds), as a user runs it.

    python benchmarks/paper_scale.py                       # tracking off, torch_threads=1
    python benchmarks/paper_scale.py --threads 2 --mlflow  # MLflow on (a store under --out)
    python benchmarks/paper_scale.py -- dataset=cifar10    # further overrides after --

Runs ``derelayl-train experiment=paper_scale`` in a subprocess (start-up, data generation,
figures and files included) into a fresh folder under ``--out`` and prints the wall time, the
final test and validation accuracy, the coins' Gini coefficient and the first round whose best
model reached ``target_acc`` (0.6 by default), read back from the run folder. No asserts.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch_threads (default 1)")
    ap.add_argument("--mlflow", action="store_true", help="track in MLflow (sqlite under --out)")
    ap.add_argument("--target", type=float, default=0.6, help="report the first round at this")
    ap.add_argument("--out", type=Path, default=None, help="folder for the run (default: a temp)")
    ap.add_argument("overrides", nargs="*", help="further derelayl-train overrides")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="paper_scale_"))
    out.mkdir(parents=True, exist_ok=True)
    run = out / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    cmd = [
        sys.executable,
        "-m",
        "derelayl.cli.train",
        "experiment=paper_scale",
        f"torch_threads={args.threads}",
        f"hydra.run.dir={run}",
        f"target_acc={args.target}",
    ]
    if args.mlflow:
        cmd += [
            f"tracking.uri=sqlite:///{out}/mlflow.db",
            f"tracking.artifact_location={out}/mlartifacts",
        ]
    else:
        cmd.append("tracking=none")
    cmd += args.overrides
    print(" ".join(cmd[2:]), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=out, env=dict(os.environ))
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(f"derelayl-train exited with {proc.returncode} after {wall:.1f} s")
        sys.exit(proc.returncode)
    metrics = json.loads((run / "metrics.json").read_text())
    reached = None
    with open(run / "history.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if reached is None and row.get("test_acc") and float(row["test_acc"]) >= args.target:
                reached = int(float(row["round"]))
    print(f"run folder {run}")
    print(
        f"rounds {metrics['rounds']}, hops {metrics['hops']}, test_acc {metrics['test_acc']:.4f}, "
        f"val_acc {metrics['val_acc']:.4f}, coins_gini {metrics['coins_gini']:.4f}, "
        f"round reaching test_acc {args.target}: {reached}"
    )
    print(f"wall_s {wall:.1f}")


if __name__ == "__main__":
    main()
