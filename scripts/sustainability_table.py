"""The README's sustainability table: every incentive scheme, 5 seeds, DeRelayL with real models.

    python scripts/sustainability_table.py [--seeds 5] [--jobs 2] [--update-readme]

Digits, Dirichlet(0.5), 20 participants, `trained` performance, churn on, 20% free-riders,
heterogeneous costs (the `mobile` participants' defaults), Shapley values of the best model's
lineage on. Runs land in outputs/sustainability/<scheme>/seed<k>/; the table also goes to
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

from derelayl.batch import mean_std, replace_between, run_batch, run_overrides  # noqa: E402
from derelayl.core.incentives import INCENTIVES  # noqa: E402

SETTING = ["algorithm=derelayl", "derelayl.performance=trained", "partition=dirichlet",
           "partition.alpha=0.5", "churn.enabled=true", "participants.behaviour.free_rider=0.2",
           "shapley.enabled=true", "progress_every=1000"]
START, END = "<!-- sustainability_table:start -->", "<!-- sustainability_table:end -->"
COLUMNS = [("retention", "retention", ".2f"), ("active_participants", "active at end", ".1f"),
           ("utility_positive_share", "positive utility", ".2f"),
           ("test_acc", "best test acc", ".3f"),
           ("coins_shapley_spearman", "coins~Shapley (Spearman)", ".2f"),
           ("coins_shapley_pearson", "coins~Shapley (Pearson)", ".2f"),
           ("coins_gini", "Gini", ".2f"), ("coins_minted", "coins issued", ".1f"),
           ("coins_burned", "burned", ".2f"), ("coins_total", "held", ".1f"),
           ("free_rider_coin_share", "free-riders' coin share", ".3f")]


FL_SETTING = ["algorithm=fedavg", "partition=dirichlet", "partition.alpha=0.5",
              "shapley.enabled=true", "shapley.permutations=20", "progress_every=1000"]


def run_one(job):
    scheme, seed, out = job
    if scheme == "fedavg":  # one FL run per seed; every scheme's coins are computed from it
        folder = Path(out) / "fedavg" / f"seed{seed}"
        metrics = run_overrides([*FL_SETTING, f"seed={seed}"], folder)
        return {"scheme": "fedavg", "seed": seed, **metrics, **fl_payouts(folder)}
    metrics = run_overrides([*SETTING, f"incentive={scheme}", f"seed={seed}"],
                            Path(out) / scheme / f"seed{seed}")
    return {"scheme": scheme, "seed": seed, **metrics}


def fl_payouts(folder: Path) -> dict:
    """Coins of every scheme applied to the FL run's rounds, against its Shapley values."""
    import numpy as np
    from omegaconf import OmegaConf

    from derelayl.cli.train import config_dir
    from derelayl.core.incentives import FederatedPayouts, make_incentive
    from derelayl.core.metrics import gini
    from derelayl.core.shapley import pearson, spearman

    rounds = json.loads((folder / "participation.json").read_text())
    values = json.loads((folder / "shapley.json").read_text())["values"]
    phi = [values[str(i)] for i in range(len(rounds["samples"]))]
    out = {}
    for scheme in INCENTIVES:
        params = OmegaConf.to_container(OmegaConf.load(config_dir() / "incentive" / f"{scheme}.yaml"))
        payouts = FederatedPayouts(make_incentive(**params), np.array(rounds["samples"]))
        for r in rounds["rounds"]:
            payouts.settle(r["clients"], r["gains"])
        out[scheme] = {"coins_gini": gini(payouts.coins), "coins_minted": payouts.minted,
                       "coins_shapley_spearman": spearman(payouts.coins, phi),
                       "coins_shapley_pearson": pearson(payouts.coins, phi)}
    return {"fl_schemes": out}


def table(rows, seeds):
    lines = [f"Digits, Dirichlet(0.5), 20 participants (pool of 40 with churn), `trained`, churn "
             f"on, 20% free-riders, 30 rounds; mean ± std over {seeds} seeds.", "",
             "| scheme | " + " | ".join(c[1] for c in COLUMNS) + " |",
             "| --- |" + " --- |" * len(COLUMNS)]
    for scheme in INCENTIVES:
        rs = [r for r in rows if r["scheme"] == scheme]
        if not rs:
            continue
        cells = [mean_std([r.get(k) for r in rs], fmt) for k, _, fmt in COLUMNS]
        lines.append(f"| {scheme} | " + " | ".join(cells) + " |")
    fl = [r for r in rows if r["scheme"] == "fedavg"]
    if fl:
        lines += ["", f"The same schemes paid on FedAvg's rounds (a reward per participating "
                      f"client; no churn, no adversaries, no deposits; Shapley values by TMC with "
                      f"20 permutations, every coalition rerunning FedAvg alone); FedAvg's best "
                      f"test acc {mean_std([r['test_acc'] for r in fl], '.3f')}:", "",
                  "| scheme on FedAvg | coins~Shapley (Spearman) | coins~Shapley (Pearson) | "
                  "Gini | coins issued |", "| --- | --- | --- | --- | --- |"]
        for scheme in INCENTIVES:
            vals = [r["fl_schemes"][scheme] for r in fl]
            lines.append(f"| {scheme} | " + " | ".join(
                mean_std([v[k] for v in vals], fmt) for k, fmt in
                (("coins_shapley_spearman", ".2f"), ("coins_shapley_pearson", ".2f"),
                 ("coins_gini", ".2f"), ("coins_minted", ".1f"))) + " |")
    return "\n".join(lines) + "\n"


def figures(out: Path, dest: Path) -> list[Path]:
    """Participants over time by scheme, and coins against Shapley value (all runs pooled)."""
    import numpy as np

    from derelayl.reporting.economy_plots import plot_reward_vs_shapley, plot_series_by_group

    active, coins, phi = {}, [], []
    for scheme in INCENTIVES:
        runs = sorted((out / scheme).glob("seed*"))
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
    ap.add_argument("--schemes", nargs="+", default=[*INCENTIVES, "fedavg"],
                    choices=[*INCENTIVES, "fedavg"], help="fedavg: the schemes paid on FedAvg")
    ap.add_argument("--update-readme", action="store_true")
    ap.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures",
                    help="where the two figures go")
    ap.add_argument("--figures-only", action="store_true",
                    help="redraw the figures from the runs already under --out")
    args = ap.parse_args()
    if args.figures_only:
        print("\n".join(map(str, figures(args.out, args.figures))))
        return
    ap_schemes = args.schemes
    jobs = [(s, k, str(args.out.resolve())) for s in ap_schemes for k in range(args.seeds)]

    def report(job, r):
        print(f"{r['scheme']:>17} seed {r['seed']}: test_acc {r['test_acc']:.3f}", flush=True)

    rows = run_batch(jobs, run_one, workers=args.jobs, progress=report)
    md = table(rows, args.seeds)
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text(md)
    args.table.with_suffix(".json").write_text(json.dumps(rows, indent=1, default=str))
    print(md)
    figures(args.out, args.figures)
    if args.update_readme:
        replace_between(ROOT / "README.md", START, END, md)


if __name__ == "__main__":
    main()
