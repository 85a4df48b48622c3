r"""``derelayl-report``: the study report (HTML + Markdown + PNG figures) from a study's runs.

    derelayl-report --experiment derelayl                    # the MLflow experiment, by name
    derelayl-report --experiment study --tracking-uri http://mlflow-host:5000
    derelayl-report --runs outputs/dvc/train                 # run folders (what DVC tracks)
    derelayl-report --experiment paper_efficacy --where partition=iid   # a subset of the runs
    derelayl-report --experiment paper_efficacy --group-by algorithm partition \
        --metrics test_acc bytes sim_time_s --table docs/results/paper_efficacy.md

Writes report.html, report.md, summary.json and figures/*.png to --out
(default: outputs/report/<experiment>); --table also writes the final-numbers table alone, as
Markdown, to the file given (what the docs include).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path
from typing import NoReturn

PROG = "derelayl-report"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line (argparse prints the usage first)
        print(f"{PROG}: error: {message} (see {PROG} --help)", file=sys.stderr)
        raise SystemExit(2)


def check_arguments(args, error) -> None:
    """Every bad argument is one line, before anything is read or written."""
    from derelayl.app.schema import TrackingUri
    from derelayl.sim.errors import ConfigError

    if args.experiment is not None and not args.experiment.strip():
        error("--experiment must be a non-empty MLflow experiment name")
    if args.tracking_uri is not None:
        try:
            TrackingUri().check("--tracking-uri", args.tracking_uri)
        except ConfigError as err:
            error(str(err))
    if args.parent_run is not None and not re.fullmatch(r"[0-9a-f]{32}", args.parent_run):
        error(f"--parent-run {args.parent_run!r} is not an MLflow run id (32 hex digits)")
    for item in args.where or []:
        if "=" not in item or not item.split("=", 1)[0].strip():
            error(f"--where {item!r}: expected KEY=VALUE (e.g. partition.alpha=0.1)")
    for key in args.group_by or []:
        if not key.strip():
            error("--group-by: empty key")
    for key in args.metrics or []:
        if not key.strip():
            error("--metrics: empty key")
    if args.table is not None:
        table = Path(args.table)
        if table.is_dir():
            error(
                f"--table {args.table} is a folder; give a file name (e.g. "
                f"docs/results/paper_efficacy.md)"
            )
        probe = table.parent
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if not probe.is_dir():
            error(f"--table {args.table}: {probe} is not a folder")
    if args.out is not None:
        out = Path(args.out)
        probe = out
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if not probe.is_dir():
            error(f"--out {args.out}: {probe} is not a folder")
        import os

        if not os.access(probe, os.W_OK | os.X_OK):
            error(f"--out {args.out}: {probe} is not writable")


def study_folders(roots: list[str], params_file: str) -> list[str]:
    """``<root>/<method>/seed<seed>`` for the study's methods and seeds (those that exist)."""
    import yaml

    from derelayl.reporting.study import ReportError

    try:
        params = yaml.safe_load(Path(params_file).read_text()) or {}
        methods, seeds = list(params["methods"]), list(params["seeds"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise ReportError(
            f"--params {params_file}: needs `methods` and `seeds` lists ({err})"
        ) from err
    folders = [Path(r) / str(m) / f"seed{s}" for r in roots for m in methods for s in seeds]
    return [str(f) for f in folders if f.is_dir()]


def check_run_folders(paths) -> None:
    """A run folder whose files cannot be read is named in one line (ReportError)."""
    import yaml

    from derelayl.reporting.study import ReportError

    folders = []
    for path in map(Path, paths):
        if (path / "metrics.json").is_file():
            folders.append(path)
        else:
            folders += sorted(p.parent for p in path.rglob("metrics.json"))
    for folder in folders:
        where = folder / "metrics.json"
        try:
            metrics = json.loads(where.read_text())
            if not isinstance(metrics, dict):
                raise ValueError("not a JSON object")
            where = folder / "config.yaml"
            if where.is_file():
                cfg = yaml.safe_load(where.read_text())
                if not isinstance(cfg, dict) or not isinstance(cfg.get("algorithm", {}), dict):
                    raise ValueError("not a run config")
            where = folder / "choices.json"
            if where.is_file():
                chosen = json.loads(where.read_text())
                if not isinstance(chosen, dict):
                    raise ValueError("not a JSON object")
            where = folder / "history.csv"
            if where.is_file():
                with where.open(newline="") as fh:
                    for row in csv.DictReader(fh):
                        for key, value in row.items():
                            if key is None or value in (None, "") or key == "failed":
                                continue
                            if key in (
                                "round",
                                "hop",
                                "test_acc",
                                "val_acc",
                                "best_test_acc",
                                "samples_seen",
                                "bytes",
                                "sim_time_s",
                            ):
                                float(value)
        except (OSError, ValueError, UnicodeDecodeError, yaml.YAMLError, csv.Error) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ReportError(f"{where} cannot be read ({first[:200]})") from None


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--experiment", help="MLflow experiment (study) name")
    src.add_argument("--runs", nargs="+", help="run folders, or folders holding run folders")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: sqlite:///<cwd>/mlflow.db, the "
        "project store; or $MLFLOW_TRACKING_URI)",
    )
    parser.add_argument(
        "--parent-run", default=None, help="only the child runs of this sweep's parent run"
    )
    parser.add_argument(
        "--group-by",
        nargs="+",
        default=None,
        help="tags/params that define a group (default: algorithm plus all "
        "that differ between runs, except the seed)",
    )
    parser.add_argument(
        "--where",
        nargs="+",
        default=None,
        metavar="KEY=VALUE",
        help="only the runs whose tag or param KEY is VALUE (all must hold), "
        "e.g. --where partition=dirichlet partition.alpha=0.1",
    )
    parser.add_argument(
        "--params",
        default=None,
        metavar="PARAMS_YAML",
        help="with --runs DIR: only the run folders DIR/<method>/seed<seed> of "
        "the `methods` and `seeds` in this file (a DVC study's "
        "params.yaml), so folders of methods or seeds dropped from the "
        "study are not reported",
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        metavar="KEY",
        help="the columns of the final-numbers table, in this order (any key of "
        "metrics.json; default: test_acc, test_loss, best_val_acc, rounds, "
        "... where reported)",
    )
    parser.add_argument(
        "--table",
        default=None,
        metavar="FILE.md",
        help="also write the final-numbers table alone (a caption line and a "
        "Markdown table) to this file, e.g. docs/results/paper_efficacy.md",
    )
    parser.add_argument("--out", default=None, help="output folder")
    parser.add_argument("--title", default=None)
    return parser


def _load(args: argparse.Namespace) -> tuple[list, str, str]:
    """The runs of ``--experiment`` or ``--runs``, where they come from, the output folder."""
    import os

    from derelayl.reporting.study import ReportError, load_mlflow_runs, load_run_dirs

    if args.experiment:
        uri = (
            args.tracking_uri
            or os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
        )
        from derelayl.io.mlflow_store import open_client

        open_client(uri, create=False)  # exists and answers: never create a store to read it
        runs = load_mlflow_runs(uri, args.experiment, args.parent_run)
        return (
            runs,
            f"MLflow experiment {args.experiment!r} at {uri}",
            args.out or f"outputs/report/{args.experiment}",
        )
    missing = [p for p in args.runs if not Path(p).exists()]
    if missing:
        raise ReportError(f"no such run folder: {', '.join(missing)}")
    folders = study_folders(args.runs, args.params) if args.params else args.runs
    check_run_folders(folders)
    runs = load_run_dirs(folders)
    return runs, "run folders " + ", ".join(args.runs), args.out or "outputs/report/runs"


def main(argv=None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    check_arguments(args, parser.error)

    from derelayl.reporting.study import ReportError, filter_runs, write_report
    from derelayl.sim.errors import ConfigError

    try:
        runs, source, out = _load(args)
        if args.where:
            total = len(runs)
            runs = filter_runs(runs, args.where)
            if not runs:
                raise ReportError(
                    f"none of the {total} runs in {source} has {' and '.join(args.where)}"
                )
            source += " where " + " and ".join(args.where)
        report = write_report(
            runs,
            out,
            title=args.title or f"Study report: {args.experiment or ', '.join(args.runs)}",
            source=source,
            group_by=args.group_by,
            subset=", ".join(args.where or []),
            metrics=args.metrics,
            table=args.table,
            command=" ".join([PROG, *(sys.argv[1:] if argv is None else list(argv))]),
        )
    except (ReportError, ConfigError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as err:
        print(
            f"{PROG}: error: cannot write the report to {out}: {err.strerror or err}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    print(
        f"{PROG}: {len(runs)} runs -> {report.html} ({len(report.figures)} figures), "
        f"{report.markdown}" + (f", {report.table}" if report.table else "")
    )
    for note in report.notes:
        print(f"{PROG}: note: {note}")


if __name__ == "__main__":
    main()
