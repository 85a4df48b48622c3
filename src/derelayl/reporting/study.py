"""The study report: runs of a study (MLflow experiment or run folders) -> figures and tables.

Runs are grouped by method (the algorithm, plus whatever else differs between the runs except the
seed), and each group's curves are averaged over its seeds (mean +- sample std, ddof = 1: the
convention of every table in this project). A group keeps one run per (config, seed): the latest
finished, so a run repeated by hand or by another sweep is not counted as another seed. Metrics
that only some algorithms log (``bytes``, ``sim_time_s``, ``retention``, ``coins_gini``, ...)
give their figures and sections where they exist; otherwise the report says what is missing.
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from derelayl.reporting.plots import plt

ACCURACY = "test_acc"
# x axes of the accuracy figures: (series key, axis label, file stem)
X_AXES = (
    ("round", "round", "accuracy_vs_rounds"),
    ("hop", "hop", "accuracy_vs_hops"),
    ("samples_seen", "samples processed (sample passes)", "accuracy_vs_samples"),
    ("bytes", "bytes communicated", "accuracy_vs_bytes"),
    ("sim_time_s", "simulated time (s)", "accuracy_vs_sim_time"),
)
SERIES_KEYS = (
    "test_acc",
    "best_test_acc",
    "val_acc",
    "round",
    "samples_seen",
    "bytes",
    "sim_time_s",
    "retention",
    "coins_gini",
    "coins_shapley_spearman",
    "adversary_coin_share",
)
FINAL_KEYS = (
    "test_acc",
    "test_loss",
    "best_val_acc",
    "rounds",
    "hops",
    "samples_seen",
    "bytes",
    "sim_time_s",
    "retention",
    "coins_gini",
    "coins_shapley_spearman",
    "adversary_coin_share",
    "wall_time_s",
)
# the config groups a run is tagged with (its Hydra choices: MLflow tags, choices.json)
GROUP_TAGS = ("algorithm", "incentive", "dataset", "partition", "model", "adversary")
# params that differ between runs without making them different experiments
IGNORED_PARAMS = (
    "seed",
    "tracking.",
    "paths.",
    "dataset.root",
    "prepared_data",
    "skip_finished",
    "progress_every",
    "hydra.",
)
CHOICES_FILE = "choices.json"
SECTIONS = {
    "sustainability": (
        "retention",
        "Active participants over time (retention) by incentive scheme",
        "it is logged by algorithm=derelayl",
    ),
    "fairness": (
        "coins_gini|coins_shapley_spearman",
        "Reward against contribution: Gini of "
        "coins and rank correlation of coins with Shapley values",
        "they are logged by the incentive schemes",
    ),
    "robustness": (
        "adversary_coin_share",
        "Accuracy and adversaries' coin share",
        "it is logged by runs with adversarial participants",
    ),
}


def _accuracy_series(series: dict[str, dict[int, float]]) -> dict[str, dict[int, float]]:
    """DeRelayL logs its run's model along the rounds as ``best_test_acc`` (the best model so
    far, whose test accuracy is its final ``test_acc``): that is its accuracy curve."""
    if not series.get(ACCURACY) and series.get("best_test_acc"):
        series[ACCURACY] = series["best_test_acc"]
    return series


class ReportError(RuntimeError):
    """Nothing to report (no such experiment, no finished runs); the message says why."""


@dataclass
class RunRecord:
    run_id: str
    name: str
    tags: dict[str, str]
    params: dict[str, str]
    final: dict[str, float]
    series: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> step -> value
    step_unit: str = "hop"
    finished_at: float = 0.0  # when the run ended (seconds since the epoch): the latest wins

    @property
    def seed(self) -> str:
        return self.tags.get("seed", self.params.get("seed", "?"))


# -- loading --------------------------------------------------------------------------------------
def load_mlflow_runs(
    tracking_uri: str, experiment: str, parent_run_id: str | None = None
) -> list[RunRecord]:
    """The finished runs of an MLflow experiment (sweep parents left out)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ReportError(
            f"no MLflow experiment {experiment!r} in {tracking_uri}; "
            f"experiments there: {', '.join(names) or 'none'}"
        )
    query = "attributes.status = 'FINISHED'"
    if parent_run_id:
        query += f" and tags.`mlflow.parentRunId` = '{parent_run_id}'"
    runs = []
    for run in client.search_runs([exp.experiment_id], query, max_results=50000):
        if run.data.tags.get("derelayl.sweep") == "parent":
            continue
        metrics = run.data.metrics
        series = {}
        for key in SERIES_KEYS:
            if key in metrics:
                history = client.get_metric_history(run.info.run_id, key)
                series[key] = {m.step: m.value for m in history}
        final = {k[len("final/") :]: v for k, v in metrics.items() if k.startswith("final/")}
        for key in FINAL_KEYS:  # metrics logged only along the way: their last value
            if key not in final and key in metrics:
                final[key] = metrics[key]
        params = dict(run.data.params)
        runs.append(
            RunRecord(
                run.info.run_id,
                run.info.run_name or run.info.run_id,
                dict(run.data.tags),
                params,
                final,
                _accuracy_series(series),
                params.get("algorithm.step_unit", "hop"),
                (run.info.end_time or run.info.start_time or 0) / 1000.0,
            )
        )
    return runs


def _flatten(node: Any, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(node, dict) and node:
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = str(node)
    return out


def load_run_dirs(paths: Iterable[str | Path]) -> list[RunRecord]:
    """Finished runs from run folders (``metrics.json``, ``config.yaml``, ``history.csv``);
    a folder that holds no run itself is searched for run folders below it."""
    import yaml

    folders: list[Path] = []
    for path in map(Path, paths):
        if (path / "metrics.json").is_file():
            folders.append(path)
        else:
            folders += sorted(p.parent for p in path.rglob("metrics.json"))
    runs = []
    for folder in folders:
        if not (folder / "config.yaml").is_file():
            continue
        cfg = yaml.safe_load((folder / "config.yaml").read_text()) or {}
        params = _flatten(cfg)
        final = {
            k: float(v)
            for k, v in json.loads((folder / "metrics.json").read_text()).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        tags = {"seed": str(cfg.get("seed"))}
        if (folder / CHOICES_FILE).is_file():  # the group options the run was composed from
            chosen = json.loads((folder / CHOICES_FILE).read_text())
            tags.update({k: str(chosen[k]) for k in GROUP_TAGS if chosen.get(k) is not None})
        step_unit = str((cfg.get("algorithm") or {}).get("step_unit", "hop"))
        series: dict[str, dict[int, float]] = defaultdict(dict)
        history = folder / "history.csv"
        if history.is_file():
            with history.open() as fh:
                for row in csv.DictReader(fh):
                    step = row.get(step_unit) or row.get("round")
                    if not step:
                        continue
                    for key in SERIES_KEYS:
                        value = row.get(key)
                        if value:  # neither missing nor empty
                            series[key][int(float(step))] = float(value)
            if step_unit == "round":
                series["round"] = {s: float(s) for s in next(iter(series.values()), {})}
        runs.append(
            RunRecord(
                str(folder),
                str(folder),
                tags,
                params,
                final,
                _accuracy_series(dict(series)),
                step_unit,
                (folder / "metrics.json").stat().st_mtime,
            )
        )
    return runs


# -- grouping and aggregation ---------------------------------------------------------------------
def config_key(run: RunRecord) -> tuple:
    """What makes two runs the same experiment: every param that is not bookkeeping, and the
    seed."""
    return (
        run.seed,
        tuple(run.tags.get(t) for t in GROUP_TAGS),
        tuple(sorted((k, v) for k, v in run.params.items() if not k.startswith(IGNORED_PARAMS))),
    )


def latest_per_config(runs: Sequence[RunRecord]) -> tuple[list[RunRecord], int]:
    """One run per (config, seed), the latest finished: a standalone run repeated by a sweep
    (or twice by hand) is the same measurement, not another seed. Returns (runs, left out)."""
    latest: dict[tuple, RunRecord] = {}
    for run in runs:
        key = config_key(run)
        if key not in latest or run.finished_at >= latest[key].finished_at:
            latest[key] = run
    kept = [r for r in runs if latest[config_key(r)] is r]
    return kept, len(runs) - len(kept)


def run_value(run: RunRecord, key: str) -> str:
    """A run's tag ``key`` (a config group's option), else its param ``key``, else "-"."""
    return run.tags.get(key) or run.params.get(key) or "-"


def filter_runs(runs: Sequence[RunRecord], where: Sequence[str]) -> list[RunRecord]:
    """The runs whose tag or param matches every ``KEY=VALUE`` (numbers compare as numbers)."""
    conditions = []
    for cond in where:
        key, sep, wanted = cond.partition("=")
        if not sep or not key:
            raise ReportError(f"--where wants KEY=VALUE (got {cond!r})")
        conditions.append((key, wanted))

    def matches(have: str, wanted: str) -> bool:
        if have == wanted:
            return True
        try:
            return float(have) == float(wanted)
        except ValueError:
            return False

    return [r for r in runs if all(matches(run_value(r, k), v) for k, v in conditions)]


def group_runs(
    runs: Sequence[RunRecord], group_by: Sequence[str] | None = None
) -> dict[str, list[RunRecord]]:
    """``{label: runs}``: by ``group_by`` (tags or params), else by the algorithm plus every tag
    and param that differs between the runs (seeds are what a group averages over)."""
    value = run_value
    if group_by:
        keys = list(group_by)
    else:
        keys = ["algorithm"]
        for tag in GROUP_TAGS[1:]:
            if len({r.tags.get(tag) for r in runs}) > 1:
                keys.append(tag)
        by_algorithm: dict[str, list[RunRecord]] = defaultdict(list)
        for run in runs:
            by_algorithm[run.tags.get("algorithm", "-")].append(run)
        all_params = sorted({k for r in runs for k in r.params})
        for key in all_params:
            if key.startswith(IGNORED_PARAMS) or key in keys or key.endswith(".name"):
                continue
            # a param that only some algorithms have does not split their groups by itself
            if not any(len({r.params.get(key) for r in rs}) > 1 for rs in by_algorithm.values()):
                continue
            # nor does one that the keys so far already determine (partition._target_ given the
            # partition, each participants.behaviour.* given the preset that sets them)
            seen: dict[tuple[str, ...], set[str | None]] = defaultdict(set)
            for run in runs:
                seen[tuple(value(run, k) for k in keys)].add(run.params.get(key))
            if any(len(v) > 1 for v in seen.values()):
                keys.append(key)

    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        parts = [value(run, keys[0])] + [
            f"{k}={value(run, k)}" for k in keys[1:] if value(run, k) != "-"
        ]
        groups[", ".join(parts)].append(run)
    return dict(sorted(groups.items()))


def run_curve(run: RunRecord, x_key: str, y_key: str = ACCURACY) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) points of one run: y at every step where both are known; for ``round`` on a
    hop-level run, y at the last hop of each round."""
    ys = run.series.get(y_key) or {}
    if not ys:
        return np.array([]), np.array([])
    pts: list[tuple[float, float]]
    if x_key == "hop":
        if run.step_unit != "hop":
            return np.array([]), np.array([])
        pts = sorted(ys.items())
    elif x_key == "round" and run.step_unit == "round":
        pts = sorted(ys.items())
    else:
        xs = run.series.get(x_key) or {}
        if x_key == "round" and xs:
            last_step: dict[float, int] = {}
            for step, rnd in sorted(xs.items()):
                last_step[rnd] = step
            steps_with_y = sorted(ys)
            pts = []
            for rnd, step in sorted(last_step.items()):
                before = [s for s in steps_with_y if s <= step]
                if before:
                    pts.append((rnd, ys[before[-1]]))
        else:
            pts = sorted((xs[s], y) for s, y in ys.items() if s in xs)
    if not pts:
        return np.array([]), np.array([])
    x, y = zip(*pts)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def mean_std_curve(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], points: int = 60
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Mean and std over runs: on the shared x values, else interpolated on their common range."""
    curves = [(x, y) for x, y in curves if len(x)]
    if not curves:
        return None
    first = curves[0][0]
    if all(len(x) == len(first) and np.allclose(x, first) for x, _ in curves):
        grid = first
        ys = np.stack([y for _, y in curves])
    else:
        lo, hi = max(x.min() for x, _ in curves), min(x.max() for x, _ in curves)
        if hi <= lo:
            return None
        grid = np.linspace(lo, hi, points)
        ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    std = ys.std(axis=0, ddof=1) if len(ys) > 1 else np.zeros(len(grid))
    return grid, ys.mean(axis=0), std


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof = 1; nan for a single value, which then shows alone)."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if not len(arr):
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else math.nan


def final_table(
    groups: Mapping[str, list[RunRecord]], metrics: Sequence[str] | None = None
) -> tuple[list[str], list[dict[str, Any]]]:
    """The final numbers of each group (mean and sample std over its seeds): ``metrics`` in that
    order (a run's ``final/<key>`` or metrics.json key), else every FINAL_KEYS one present."""
    have = {k for rs in groups.values() for r in rs for k in r.final}
    if metrics:
        missing = [k for k in metrics if k not in have]
        if len(missing) == len(metrics):
            raise ReportError(
                f"--metrics: no run reports {', '.join(missing)}; the runs report "
                f"{', '.join(sorted(have)) or 'nothing'}"
            )
        present = list(metrics)
    else:
        present = [k for k in FINAL_KEYS if k in have]
    rows = []
    for label, runs in groups.items():
        row: dict[str, Any] = {
            "group": label,
            "runs": len(runs),
            "seeds": ",".join(sorted({r.seed for r in runs})),
        }
        for key in present:
            vals = [r.final[key] for r in runs if key in r.final]
            row[key] = _mean_std(vals) if vals else None
        rows.append(row)
    return present, rows


# -- figures --------------------------------------------------------------------------------------
LINE_STYLES = ("-", "--", "-.", ":")


def short_labels(labels: Sequence[str]) -> tuple[dict[str, str], str]:
    """Group labels without the leading part that all of them share ("derelayl, "), and that
    part (for the title): ``({label: short}, common)``; where a single ``key=value`` is left,
    just the values ("derelayl, by incentive" in the title)."""
    firsts = {label.split(", ", 1)[0] for label in labels}
    if not (len(labels) > 1 and len(firsts) == 1 and all(", " in label for label in labels)):
        return {label: label for label in labels}, ""
    short = {label: label.split(", ", 1)[1] for label in labels}
    common = firsts.pop()
    # one key left ("incentive=uniform", ...): its values, and the key in the title
    keys = {rest.split("=", 1)[0] for rest in short.values()}
    if len(keys) == 1 and all("=" in r and ", " not in r for r in short.values()):
        short = {label: rest.split("=", 1)[1] for label, rest in short.items()}
        common = f"{common}, by {keys.pop()}"
    return short, common


def plot_curves(
    groups: Mapping[str, list[RunRecord]],
    x_key: str,
    x_label: str,
    y_key: str,
    y_label: str,
    title: str,
    path: Path,
) -> Path | None:
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    drawn = 0
    short, common = short_labels(list(groups))
    if common:
        title = f"{title} ({common})"
    for label, runs in groups.items():
        curves = [run_curve(r, x_key, y_key) for r in runs]
        agg = mean_std_curve(curves)
        if agg is None:
            continue
        grid, mean, std = agg
        n = sum(1 for x, _ in curves if len(x))
        # line styles take turns too: curves that coincide (FedProx with a small mu and
        # FedAvg) stay visible
        (line,) = ax.plot(
            grid,
            mean,
            LINE_STYLES[drawn % len(LINE_STYLES)],
            lw=1.6,
            marker="o" if len(grid) <= 30 else None,
            ms=3,
            label=f"{short[label]} (n={n})",
        )
        if n > 1:
            ax.fill_between(
                grid,
                mean - std,
                mean + std,
                color=line.get_color(),
                alpha=0.2 if len(groups) <= 4 else 0.12,
            )
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if y_key.endswith("_acc") or y_key in ("retention",):
        ax.set_ylim(0, 1)
    if x_key in ("round", "hop"):
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if x_key in ("bytes",):
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title + "\n(mean ± sample std over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_bars(
    rows: Sequence[dict[str, Any]], keys: Sequence[str], title: str, path: Path
) -> Path | None:
    keys = [k for k in keys if any(r.get(k) for r in rows)]
    if not keys:
        return None
    short, common = short_labels([r["group"] for r in rows])
    if common:
        title = f"{title} ({common})"
    fig, axes = plt.subplots(
        1, len(keys), figsize=(max(4.5 * len(keys), 7.5), 4.5), dpi=120, squeeze=False
    )
    for ax, key in zip(axes[0], keys):
        labels = [short[r["group"]] for r in rows if r.get(key)]
        means = [r[key][0] for r in rows if r.get(key)]
        stds = [0.0 if math.isnan(r[key][1]) else r[key][1] for r in rows if r.get(key)]
        ax.bar(range(len(labels)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(key)
        ax.set_title(key, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title + "\n(mean ± sample std over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# -- the report -----------------------------------------------------------------------------------
def _fmt(cell: Any) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, tuple):
        mean, std = cell
        if math.isnan(mean):
            return "-"
        if (std == 0 or math.isnan(std)) and float(mean).is_integer():
            return str(int(mean))
        if math.isnan(std):  # a single run: no spread to show
            return f"{mean:.4g}" if abs(mean) >= 1000 else f"{mean:.4f}"
        if abs(mean) >= 1000:
            return f"{mean:.4g} ± {std:.2g}"
        return f"{mean:.4f} ± {std:.4f}"
    return str(cell)


def _has(runs: Sequence[RunRecord], keys: str) -> bool:
    return any(k in r.series or k in r.final for r in runs for k in keys.split("|"))


@dataclass
class Report:
    out_dir: Path
    html: Path
    markdown: Path
    summary: Path
    figures: list[Path]
    notes: list[str]
    table: Path | None = None


def markdown_table(header: Sequence[str], rows: Sequence[dict[str, Any]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
        *["| " + " | ".join(_fmt(r.get(h)) for h in header) + " |" for r in rows],
    ]


Section = tuple[str, list[tuple[str, Path]], list[str]]


def write_report(
    runs: Sequence[RunRecord],
    out_dir: str | Path,
    *,
    title: str,
    source: str,
    group_by: Sequence[str] | None = None,
    subset: str = "",
    metrics: Sequence[str] | None = None,
    table: str | Path | None = None,
    command: str = "",
) -> Report:
    """``subset`` (e.g. the ``--where`` conditions) goes into every figure's title; ``metrics``
    are the final table's columns; ``table``: also write that table alone (a caption line and
    the Markdown table, for the docs to include), with ``command`` that made it."""
    if not runs:
        raise ReportError(f"no finished runs in {source}")
    runs, repeated = latest_per_config(runs)
    groups = group_runs(runs, group_by)
    present, rows = final_table(groups, metrics)  # before anything is written: may refuse
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for old in fig_dir.glob("*.png"):  # a figure whose metric is gone must not linger
        old.unlink()

    def fig_title(text: str) -> str:
        return f"{text} [{subset}]" if subset else text

    sections = [
        _accuracy_section(groups, fig_dir, fig_title),
        *_study_sections(runs, groups, rows, fig_dir, fig_title),
    ]
    summary_path = _write_summary(rows, out_dir / "summary.json")
    header = ["group", "runs", "seeds", *present]
    kept = (
        f" ({repeated} repeated run{'s' if repeated != 1 else ''} of the same config and "
        f"seed left out: the latest finished counts)"
        if repeated
        else ""
    )
    intro = f"{len(runs)} finished runs in {len(groups)} groups"
    if table is not None:
        table = Path(table)
        _write_table(
            table,
            header,
            rows,
            command=command,
            caption=f"{intro}, mean ± sample std over seeds"
            f"{' (' + subset + ')' if subset else ''}; source: `{source}`.",
        )
    md_path = _write_markdown(
        out_dir / "report.md",
        header,
        rows,
        sections,
        title=title,
        intro=f"Source: `{source}`; {intro} (mean ± sample std over seeds){kept}.",
    )
    html_path = _write_html(
        out_dir / "report.html",
        header,
        rows,
        sections,
        title=title,
        intro=f"<p>Source: <code>{html.escape(source)}</code>; {intro} (mean "
        f"&plusmn; sample std over seeds){html.escape(kept)}.</p>",
    )
    figures = [p for _, figs, _ in sections for _, p in figs]
    all_notes = [n for _, _, ns in sections for n in ns]
    if repeated:
        all_notes.insert(
            0,
            f"{repeated} repeated run(s) of the same config and seed left out "
            f"(the latest finished of each counts)",
        )
    return Report(out_dir, html_path, md_path, summary_path, figures, all_notes, table)


def _accuracy_section(
    groups: Mapping[str, list[RunRecord]], fig_dir: Path, fig_title: Callable[[str], str]
) -> Section:
    """Test accuracy against every x axis that the runs log."""
    figs, notes = [], []
    for x_key, x_label, stem in X_AXES:
        path = plot_curves(
            groups,
            x_key,
            x_label,
            ACCURACY,
            "test accuracy",
            fig_title(f"Test accuracy against {x_label}"),
            fig_dir / f"{stem}.png",
        )
        if path is not None:
            figs.append((f"Test accuracy against {x_label}", path))
        elif x_key in ("bytes", "sim_time_s"):
            notes.append(f"accuracy against {x_label}: omitted, no run logs `{x_key}`")
    return ("Accuracy", figs, notes)


def _study_sections(
    runs: Sequence[RunRecord],
    groups: Mapping[str, list[RunRecord]],
    rows: list[dict],
    fig_dir: Path,
    fig_title: Callable[[str], str],
) -> list[Section]:
    """Sustainability, fairness and robustness: a figure where the runs log the metric, a note
    saying what is missing otherwise."""
    sections: list[Section] = []
    for name, (keys, heading, why) in SECTIONS.items():
        if not _has(runs, keys):
            logged = " or ".join(f"`{k}`" for k in keys.split("|"))
            sections.append((name.capitalize(), [], [f"omitted: no run logs {logged} ({why})"]))
            continue
        if name == "sustainability":
            p = plot_curves(
                groups,
                "round",
                "round",
                "retention",
                "active participants (share)",
                fig_title(heading),
                fig_dir / "sustainability_retention.png",
            )
        elif name == "fairness":
            p = plot_bars(
                rows,
                ["coins_gini", "coins_shapley_spearman"],
                fig_title(heading),
                fig_dir / "fairness.png",
            )
        else:
            p = plot_bars(
                rows,
                ["test_acc", "adversary_coin_share"],
                fig_title(heading),
                fig_dir / "robustness.png",
            )
        figs = [(heading, p)] if p else []
        sections.append((name.capitalize(), figs, [] if figs else ["no figure: values missing"]))
    return sections


def _write_summary(rows: list[dict], path: Path) -> Path:
    """``summary.json``: every group's final numbers (mean and std; NaN as null)."""

    def finite(x: float) -> float | None:
        return None if math.isnan(x) else x

    summary = {
        row["group"]: {
            k: ({"mean": finite(v[0]), "std": finite(v[1])} if isinstance(v, tuple) else v)
            for k, v in row.items()
            if k != "group"
        }
        for row in rows
    }
    path.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    return path


def _write_table(
    path: Path, header: list[str], rows: list[dict], *, command: str, caption: str
) -> None:
    """The final table alone (for the docs to include): the command that made it, a caption."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"<!-- generated by derelayl-report; do not edit: {command} -->"] if command else []
    lines += [caption, "", *markdown_table(header, rows)]
    path.write_text("\n".join(lines) + "\n")


def _write_markdown(
    path: Path,
    header: list[str],
    rows: list[dict],
    sections: list[Section],
    *,
    title: str,
    intro: str,
) -> Path:
    md = [f"# {title}", "", intro, ""]
    md += ["## Final numbers", "", *markdown_table(header, rows)]
    for name, figs, sec_notes in sections:
        md += ["", f"## {name}", ""]
        md += [f"![{cap}](figures/{p.name})" for cap, p in figs]
        md += [f"- {n}" for n in sec_notes]
    path.write_text("\n".join(md) + "\n")
    return path


def _write_html(
    path: Path,
    header: list[str],
    rows: list[dict],
    sections: list[Section],
    *,
    title: str,
    intro: str,
) -> Path:
    esc = html.escape
    body = [
        f"<h1>{esc(title)}</h1>",
        intro,
        "<h2>Final numbers</h2>",
        "<table><thead><tr>"
        + "".join(f"<th>{esc(h)}</th>" for h in header)
        + "</tr></thead><tbody>",
    ]
    body += [
        "<tr>" + "".join(f"<td>{esc(_fmt(r.get(h)))}</td>" for h in header) + "</tr>" for r in rows
    ]
    body.append("</tbody></table>")
    for name, figs, sec_notes in sections:
        body.append(f"<h2>{esc(name)}</h2>")
        body += [
            f'<figure><img src="figures/{esc(p.name)}" alt="{esc(cap)}">'
            f"<figcaption>{esc(cap)}</figcaption></figure>"
            for cap, p in figs
        ]
        body += [f'<p class="note">{esc(n)}</p>' for n in sec_notes]
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title><style>body{{font-family:sans-serif;max-width:1000px;"
        "margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:4px 8px;font-size:90%}img{max-width:100%}.note{color:#666}</style>"
        "</head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    return path
