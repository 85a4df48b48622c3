"""The README's sustainability table: every incentive scheme, 5 seeds, DeRelayL and FedAvg.

    python scripts/sustainability_table.py [--seeds 5] [--jobs 2] [--update-readme] [--resume]

Digits, Dirichlet(0.5), 20 participants (a pool of 40 identities), churn on, 20% free-riders,
heterogeneous costs (the `mobile` participants' defaults), 30 rounds, for both methods:
DeRelayL with `trained` performance (Shapley values of the best model's lineage), and FedAvg
with the same population, the scheme paid every round, and Shapley values by truncated Monte
Carlo over the participants ever active (every coalition reruns FedAvg without churn).
Runs land in outputs/sustainability/<method>/<scheme>/seed<k>/; the table also goes to
reports/sustainability_table.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from derelayl.batch import mean_std, publish, run_batch, run_overrides  # noqa: E402
from derelayl.protocol.incentives import INCENTIVES  # noqa: E402

POPULATION = ["partition=dirichlet", "partition.alpha=0.5", "churn.enabled=true",
              "participants.behaviour.free_rider=0.2", "shapley.enabled=true",
              "progress_every=1000"]
SETTING = {"derelayl": ["algorithm=derelayl", "derelayl.performance=trained", "derelayl.rounds=30",
                        *POPULATION],
           # FL's coalition values rerun all of FedAvg: fewer TMC permutations than DeRelayL's
           "fedavg": ["algorithm=fedavg", "algorithm.rounds=30", *POPULATION,
                      "shapley.permutations=PERMUTATIONS"]}
METHODS = tuple(SETTING)
START, END = "<!-- sustainability_table:start -->", "<!-- sustainability_table:end -->"
COLUMNS = [("retention", "retention", ".2f"), ("active_participants", "active at end", ".1f"),
           ("utility_positive_share", "positive utility", ".2f"),
           ("test_acc", "best test acc", ".3f"),
           ("coins_shapley_spearman", "coins~Shapley (Spearman)", ".2f"),
           ("coins_shapley_pearson", "coins~Shapley (Pearson)", ".2f"),
           ("coins_gini", "Gini", ".2f"), ("coins_minted", "coins issued", ".1f"),
           ("coins_burned", "burned", ".2f"), ("coins_total", "held", ".1f"),
           ("free_rider_coin_share", "free-riders' coin share", ".3f"),
           ("samples_seen", "samples trained", ".0f")]


def run_one(job):
    method, scheme, seed, out, permutations, resume = job
    overrides = [o.replace("PERMUTATIONS", str(permutations)) for o in SETTING[method]]
    # resume: a finished run of the same resolved config is reused (skip_finished), an
    # interrupted DeRelayL run resumes from its checkpoint
    metrics = run_overrides([*overrides, f"incentive={scheme}", f"seed={seed}"],
                            Path(out) / method / scheme / f"seed{seed}", fresh=not resume)
    if method == "fedavg":  # FedAvg's model is the last global one; report its best, as DeRelayL
        metrics["test_acc"] = metrics["best_test_acc"]
    return {"method": method, "scheme": scheme, "seed": seed, **metrics}


def table(rows, seeds, permutations):
    lines = [f"Digits, Dirichlet(0.5), 20 participants (pool of 40), churn on, 20% free-riders, "
             f"heterogeneous costs, 30 rounds; mean ± std over {seeds} seeds. DeRelayL: `trained`, "
             f"3 local epochs per hop, Shapley values of the best model's lineage. FedAvg: C = 0.1 "
             f"of the active participants, E = 5, the scheme paid every round (a reward per "
             f"participating client), Shapley values by TMC with {permutations} permutations over "
             f"the participants ever active (each coalition reruns FedAvg without churn); best "
             f"test acc is the best global model's.", ""]
    for method in METHODS:
        if not any(r.get("method", "derelayl") == method for r in rows):
            continue
        head = "scheme" if method == "derelayl" else "scheme on FedAvg"
        lines += ["| " + head + " | " + " | ".join(c[1] for c in COLUMNS) + " |",
                  "| --- |" + " --- |" * len(COLUMNS)]
        for scheme in INCENTIVES:
            rs = [r for r in rows if r.get("method", "derelayl") == method and r["scheme"] == scheme]
            if not rs:
                continue
            cells = [mean_std([r.get(k) for r in rs], fmt) for k, _, fmt in COLUMNS]
            lines.append(f"| {scheme} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def figures(out: Path, dest: Path) -> list[Path]:
    """Participants over time by scheme, and coins against Shapley value (all runs pooled)."""
    import numpy as np

    from derelayl.reporting.economy_plots import plot_reward_vs_shapley, plot_series_by_group

    active, coins, phi = {}, [], []
    for scheme in INCENTIVES:
        runs = sorted((out / "derelayl" / scheme).glob("seed*"))
        if not runs:
            continue
        active[scheme] = [[json.loads(line)["active_participants"]
                           for line in (r / "rounds.jsonl").read_text().splitlines()]
                          for r in runs]
        if scheme == "derelayl":
            for r in runs:
                values = json.loads((r / "shapley.json").read_text())["values"]
                for row in (r / "participants.csv").read_text().splitlines()[1:]:
                    cells = row.split(",")
                    coins.append(float(cells[3]))
                    phi.append(values.get(cells[0], 0.0))
    dest.mkdir(parents=True, exist_ok=True)
    if not active:
        return []
    return [plot_series_by_group(active, dest / "sustainability_active_participants.png",
                                 "active participants",
                                 "participants over time by incentive scheme (churn on, "
                                 "20% free-riders)"),
            plot_reward_vs_shapley(np.array(coins), np.array(phi),
                                   dest / "sustainability_coins_vs_shapley.png",
                                   title="incentive=derelayl: coins against Shapley value "
                                         "(all seeds)")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "sustainability")
    ap.add_argument("--table", type=Path, default=ROOT / "reports" / "sustainability_table.md")
    ap.add_argument("--schemes", nargs="+", default=list(INCENTIVES), choices=INCENTIVES)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--permutations", type=int, default=20,
                    help="TMC permutations of FedAvg's Shapley values")
    ap.add_argument("--update-readme", action="store_true")
    ap.add_argument("--resume", action="store_true",
                    help="reuse the finished runs under --out (same resolved config) instead of "
                         "starting every run afresh")
    ap.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures",
                    help="where the two figures go")
    ap.add_argument("--figures-only", action="store_true",
                    help="redraw the figures from the runs already under --out")
    args = ap.parse_args()
    if args.figures_only:
        print("\n".join(map(str, figures(args.out, args.figures))))
        return
    jobs = [(m, s, k, str(args.out.resolve()), args.permutations, args.resume)
            for m in args.methods for s in args.schemes for k in range(args.seeds)]

    def report(job, r):
        print(f"{r['method']:>8} {r['scheme']:>17} seed {r['seed']}: test_acc "
              f"{r['test_acc']:.3f}", flush=True)

    rows = run_batch(jobs, run_one, workers=args.jobs, progress=report)
    md = table(rows, args.seeds, args.permutations)
    figures(args.out, args.figures)
    publish(md, rows, args.table, ROOT / "README.md" if args.update_readme else None,
            (START, END))


if __name__ == "__main__":
    main()
