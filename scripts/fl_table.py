"""The results table of the README: every method x partition x seed on the digits default.

    python scripts/fl_table.py                       # 5 seeds, all methods, 4 partitions
    python scripts/fl_table.py --update-readme       # ... and rewrite the README's table
    python scripts/fl_table.py --seeds 2 --methods relay fedavg --partitions iid

Each run is ``derelayl-train`` with the overrides below and ``tracking=none`` (run in-process
through the same ``run_experiment``, ``--jobs`` at a time); its files land in
``outputs/fl_table/<partition>/<method>/seed<k>/``. Methods whose algorithm is not registered
(e.g. ``derelayl`` before the protocol lands) are skipped with a message.

Equal computation: with ``--budget-from derelayl`` (the default when it is registered) each
(partition, seed)'s ``derelayl`` run goes first and the baselines get
``algorithm.sample_budget`` = its ``samples_seen``; otherwise every method keeps its default
budget, 5 epochs of the training set (the relay's 5 rounds x 1 local epoch).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from derelayl.batch import mean_std, publish, run_batch, run_overrides, slug  # noqa: E402
METHODS = ("derelayl", "relay", "fedavg", "fedprox", "scaffold", "local", "centralized")
# extra overrides per method; derelayl is compared with its `trained` performance model
METHOD_OVERRIDES = {"derelayl": ["algorithm=derelayl", "derelayl.performance=trained",
                                 "derelayl.ledger=false", "shapley.enabled=false"]}
PARTITIONS = {
    "iid": ["partition=iid"],
    "dirichlet(0.5)": ["partition=dirichlet", "partition.alpha=0.5"],
    "dirichlet(0.1)": ["partition=dirichlet", "partition.alpha=0.1"],
    "shards(k=2)": ["partition=shards", "partition.classes_per_participant=2"],
}
BUDGETED = ("fedavg", "fedprox", "scaffold", "local", "centralized")
START, END = "<!-- fl_table:start -->", "<!-- fl_table:end -->"


def available(method: str) -> bool:
    from derelayl.sim.errors import ConfigError
    from derelayl.app.runners import runner_for

    try:
        runner_for(method)
    except ConfigError:
        return False
    return (ROOT / "conf" / "algorithm" / f"{method}.yaml").exists()


def run_one(job: tuple[str, str, int, list[str], str]) -> dict:
    """One run in this (worker) process; returns its metrics.json."""
    method, partition, seed, extra, out_root = job
    out = Path(out_root) / slug(partition) / method / f"seed{seed}"
    overrides = [f"seed={seed}", *PARTITIONS[partition],
                 *METHOD_OVERRIDES.get(method, [f"algorithm={method}"]), *extra]
    metrics = run_overrides(overrides, out)
    sizes = json.loads((out / "partition.json").read_text())["sizes"]
    return {"method": method, "partition": partition, "seed": seed,
            "train_samples": sum(sizes), **metrics}


def table(rows: list[dict], methods: list[str], partitions: list[str], seeds: int,
          target: float, budget_note: str, skipped: list[str]) -> str:
    lines = [f"Digits, {seeds} seeds (mean ± std), 20 participants, MLP(128), "
             f"`participants=mobile`; {budget_note}. Time to {target:.2f}: simulated seconds "
             f"until the test accuracy first reached {target:.2f} (mean over the seeds that "
             f"reached it, and how many did).", "",
             f"| partition | method | final test acc | MB moved | simulated s to {target:.2f} "
             f"| samples | rounds |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for part in partitions:
        for method in methods:
            rs = [r for r in rows if r["method"] == method and r["partition"] == part]
            if not rs:
                continue
            acc = [r["test_acc"] for r in rs]
            if method == "local":
                worst = [r["test_acc_worst"] for r in rs]
                acc_s = f"{mean_std(acc, '.3f')} (worst {mean_std(worst, '.3f')})"
            else:
                acc_s = mean_std(acc, ".3f")
            mb = mean_std([r["bytes"] / 1e6 for r in rs], ".2f")
            reached = [r["sim_time_to_target_s"] for r in rs
                       if r.get("sim_time_to_target_s") is not None]
            t = f"{mean_std(reached, '.1f')} ({len(reached)}/{len(rs)})" if reached \
                else f"never (0/{len(rs)})"
            samples = f"{statistics.mean(r['samples_seen'] for r in rs):.0f}"
            rounds = f"{statistics.mean(r['rounds'] for r in rs):.1f}"
            lines.append(f"| {part} | {method} | {acc_s} | {mb} | {t} | {samples} | {rounds} |")
    if skipped:
        lines += ["", f"Not run (algorithm not registered in this checkout): {', '.join(skipped)}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--partitions", nargs="+", default=list(PARTITIONS), choices=list(PARTITIONS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--budget-from", choices=("auto", "derelayl", "default"), default="auto")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "fl_table")
    ap.add_argument("--table", type=Path, default=ROOT / "reports" / "fl_table.md")
    ap.add_argument("--update-readme", action="store_true",
                    help=f"replace the README's table between {START} and {END}")
    args = ap.parse_args()
    methods = [m for m in args.methods if available(m)]
    skipped = [m for m in args.methods if m not in methods]
    for m in skipped:
        print(f"skipped {m}: algorithm={m} is not registered in this checkout", flush=True)
    budget_from = args.budget_from
    if budget_from == "auto":
        budget_from = "derelayl" if "derelayl" in methods else "default"
    if budget_from == "derelayl" and "derelayl" not in methods:
        sys.exit("fl_table: --budget-from derelayl needs algorithm=derelayl")
    seeds = list(range(args.seeds))
    out = str(args.out.resolve())
    rows: list[dict] = []

    def report(job, r):
        print(f"{r['partition']:>15} {r['method']:>12} seed {r['seed']}: test_acc "
              f"{r['test_acc']:.4f} samples {r['samples_seen']} bytes {r['bytes']}", flush=True)

    def run_all(jobs):
        rows.extend(run_batch(jobs, run_one, workers=args.jobs, progress=report))

    if budget_from == "derelayl":
        run_all([("derelayl", p, s, [], out) for p in args.partitions for s in seeds])
        budget = {(r["partition"], r["seed"]): r["samples_seen"] for r in rows}
        epochs = {(r["partition"], r["seed"]): r["samples_seen"] / r["train_samples"] for r in rows}
        note = ("the baselines get derelayl's `samples_seen` as `algorithm.sample_budget`, the "
                "relay as many rounds (one epoch of the training set each) as that is epochs")
    else:
        budget = {}
        note = ("every method has the same budget of local sample passes, 5 epochs of the "
                "training set (the relay's 5 rounds x 1 local epoch)")
    jobs = []
    for p in args.partitions:
        for m in methods:
            if m == "derelayl" and budget_from == "derelayl":
                continue
            for s in seeds:
                extra = []
                if budget and m in BUDGETED:
                    extra = [f"algorithm.sample_budget={budget[(p, s)]}"]
                elif budget and m == "relay":
                    extra = [f"algorithm.rounds={max(1, round(epochs[(p, s)]))}"]
                jobs.append((m, p, s, extra, out))
    run_all(jobs)

    from hydra import compose, initialize_config_dir

    from derelayl.cli.train import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        target = float(compose(config_name="train", overrides=[f"data_dir={ROOT}/data"]).target_acc)
    md = table(rows, [m for m in METHODS if m in methods], args.partitions, len(seeds), target,
               note, skipped)
    publish(md, [{k: v for k, v in r.items() if isinstance(v, (int, float, str)) or v is None}
                 for r in rows], args.table, ROOT / "README.md" if args.update_readme else None,
            (START, END), default=lambda v: None if isinstance(v, float)
            and not math.isfinite(v) else v)


if __name__ == "__main__":
    main()
