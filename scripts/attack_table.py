"""The README's robustness table: 30% attackers of each kind against the all-honest run.

    python scripts/attack_table.py [--seeds 3] [--fraction 0.3] [--jobs 2] [--update-readme]

DeRelayL with real models on digits, Dirichlet(0.5), 20 participants, 30 rounds, the authors'
incentive rule, at the default hop (3 local epochs) and, for comparison, at 1 and 5 local epochs;
and FedAvg on the same participants (30 epochs of budget, about DeRelayL's computation; its
clients' coins under the same incentive, its final global model's test accuracy).
For each kind: the best model's test accuracy (mean of the seeds) and its difference from the
all-honest run of the same seeds and hop, the attackers' share of coins against their share of
the population, and what a hop does to its parent's score on the round's test cases (honest
hops against the attackers'). Runs: outputs/attacks/<variant>/<kind>/seed<k>/.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from derelayl.batch import mean_std, publish, run_batch, run_overrides, slug  # noqa: E402

KINDS = ("dropout", "free_rider", "label_flip", "noise", "sybil")
# the authors' protocol at three hop sizes (the default first), then FedAvg, which has no test
# step; --verification M adds our verification step (a model may not score more than M below its
# parent on the round's test cases) at the default hop
DERELAYL = ["algorithm=derelayl", "derelayl.performance=trained"]
VARIANTS = {"DeRelayL, 3 local epochs (default)": DERELAYL,
            "DeRelayL, 1 local epoch": [*DERELAYL, "algorithm.local_epochs=1"],
            "DeRelayL, 5 local epochs": [*DERELAYL, "algorithm.local_epochs=5"],
            # FedAvg pays only when asked: the same incentive as DeRelayL, for the coin share
            "FedAvg, 30 epochs of budget": ["algorithm=fedavg", "algorithm.budget_epochs=30",
                                            "incentive=derelayl"]}
SETTING = ["partition=dirichlet", "partition.alpha=0.5", "shapley.enabled=false",
           "progress_every=1000"]
START, END = "<!-- attack_table:start -->", "<!-- attack_table:end -->"


def run_one(job):
    variant, kind, fraction, seed, out = job
    extra = [] if kind == "honest" else [f"participants.behaviour.{kind}={fraction}"]
    folder = Path(out) / slug(variant) / kind / f"seed{seed}"
    metrics = run_overrides([*SETTING, *VARIANTS[variant], *extra, f"seed={seed}"], folder)
    return {"variant": variant, "kind": kind, "seed": seed, **metrics}


def table(rows, seeds, fraction):
    lines = [f"Digits, Dirichlet(0.5), 20 participants, `trained`, 30 rounds, incentive "
             f"`derelayl`; {fraction:.0%} attackers of one kind; mean ± std over {seeds} seeds. "
             f"Bar: accuracy within 2 points of the all-honest run, coin share below population "
             f"share. FedAvg: its final global model; it has no test step, no wins and no hops.",
             "",
             "Hop gain: mean change of a model's score (accuracy on the round's 100 test cases) "
             "over its parent's, honest hops / the attackers' hops.", "",
             "| protocol | attackers | best test acc | vs all-honest (points) | attackers' coin "
             "share | their population share | matches | wins | hop gain honest / attackers "
             "| bar |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for variant in VARIANTS:
        lines += table_rows([r for r in rows if r["variant"] == variant], variant)
    return "\n".join(lines) + "\n"


def table_rows(rows, variant):
    honest = {r["seed"]: r["test_acc"] for r in rows if r["kind"] == "honest"}
    base = statistics.mean(honest.values())
    gain = mean_of(rows, "honest", "hop_gain", "+.3f")
    lines = [f"| {variant} | none (all honest) | {mean_std(list(honest.values()), '.3f')} | - | "
             f"- | - | - | - | {gain} | - |"]
    for kind in KINDS:
        rs = [r for r in rows if r["kind"] == kind]
        acc = statistics.mean(r["test_acc"] for r in rs)
        delta = 100 * (acc - base)
        coin = statistics.mean(r["adversary_coin_share"] for r in rs)
        pop = statistics.mean(r["adversary_population_share"] for r in rs)
        ok = delta >= -2.0 and coin < pop
        lines.append(
            f"| {variant} | {kind} | {mean_std([r['test_acc'] for r in rs], '.3f')} | {delta:+.1f} | "
            f"{mean_std([r['adversary_coin_share'] for r in rs], '.3f')} | {pop:.2f} | "
            f"{statistics.mean(r[f'{kind}_matches'] for r in rs):.0f} | "
            f"{mean_of(rs, kind, f'{kind}_wins', '.0f')} | "
            f"{mean_of(rs, kind, 'honest_hop_gain', '+.3f')} / "
            f"{mean_of(rs, kind, f'{kind}_hop_gain', '+.3f')} | "
            f"{'met' if ok else 'MISSED'} |")
    return lines


def mean_of(rows, kind, key, fmt):
    """Mean of a metric over a kind's runs, "-" where the protocol has no such metric."""
    values = [r[key] for r in rows if r["kind"] == kind and r.get(key) is not None]
    return format(statistics.mean(values), fmt) if values else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "attacks")
    ap.add_argument("--table", type=Path, default=ROOT / "reports" / "attack_table.md")
    ap.add_argument("--verification", type=float, default=None, metavar="MARGIN",
                    help="also run with derelayl.acceptance_margin=MARGIN")
    ap.add_argument("--update-readme", action="store_true")
    args = ap.parse_args()
    if args.verification is not None:
        VARIANTS[f"DeRelayL with verification (margin {args.verification:g})"] = [
            *DERELAYL, f"derelayl.acceptance_margin={args.verification}"]
    out = str(args.out.resolve())
    jobs = [(v, k, args.fraction, s, out) for v in VARIANTS for k in ("honest", *KINDS)
            for s in range(args.seeds)]

    def report(job, r):
        print(f"{r['variant']}: {r['kind']:>10} seed {r['seed']}: test_acc {r['test_acc']:.3f} adversary coin "
              f"share {r.get('adversary_coin_share', 0.0):.3f}", flush=True)

    rows = run_batch(jobs, run_one, workers=args.jobs, progress=report)
    md = table(rows, args.seeds, args.fraction)
    publish(md, rows, args.table, ROOT / "README.md" if args.update_readme else None,
            (START, END))


if __name__ == "__main__":
    main()
