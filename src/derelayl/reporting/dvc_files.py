"""What a DVC train stage shows to ``dvc metrics show`` and ``dvc plots show``.

A run's ``metrics.json`` has 20 to 100 keys (DeRelayL's economy, behaviours, Shapley values), far
too many for DVC's tables, and its ``history.csv`` has different columns per algorithm. The train
stage writes, next to its run folder (which DVC owns as a whole), two small files with what every
method has:

- ``<metrics>.json``: ``test_acc``, ``val_acc``, ``rounds``, ``samples_seen``, ``bytes``,
  ``sim_time_s`` (null where a run has none, e.g. a random-walk DeRelayL run's accuracy);
- ``<curve>.csv``: ``step`` (hop or round), ``samples_seen``, ``val_acc``, ``test_acc`` for every
  evaluation (DeRelayL's: its model, the best so far by validation, as in its history).

    python -m derelayl.reporting.dvc_files RUN_DIR --metrics M.json --curve C.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

METRIC_KEYS = ("test_acc", "val_acc", "rounds", "samples_seen", "bytes", "sim_time_s")
CURVE_KEYS = ("step", "samples_seen", "val_acc", "test_acc")


def short_metrics(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: metrics.get(k) for k in METRIC_KEYS}


def curve_rows(run_dir: Path) -> list[dict]:
    """One row per evaluation on the test split, in the run's own step (hop or round)."""
    history = run_dir / "history.csv"
    if not history.is_file():
        return []
    rows = []
    with history.open() as fh:
        for row in csv.DictReader(fh):
            if row.get("test_acc") in (None, ""):
                continue
            rows.append(
                {
                    "step": row.get("hop") or row.get("round"),
                    "samples_seen": row.get("samples_seen"),
                    "val_acc": row.get("val_acc", ""),
                    "test_acc": row["test_acc"],
                }
            )
    return rows


def write(run_dir: Path, metrics_path: Path, curve_path: Path) -> None:
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(short_metrics(run_dir), indent=2) + "\n")
    curve_path.parent.mkdir(parents=True, exist_ok=True)
    with curve_path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(CURVE_KEYS))
        w.writeheader()
        w.writerows(curve_rows(run_dir))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m derelayl.reporting.dvc_files", description=__doc__.splitlines()[0]
    )
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--metrics", type=Path, required=True, help="the short metrics file (JSON)")
    ap.add_argument("--curve", type=Path, required=True, help="the accuracy curve (CSV)")
    args = ap.parse_args(argv)
    if not (args.run_dir / "metrics.json").is_file():
        print(
            f"{ap.prog}: error: {args.run_dir} holds no finished run (metrics.json)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    write(args.run_dir, args.metrics, args.curve)


if __name__ == "__main__":
    main()
