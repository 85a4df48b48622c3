"""Run batches of experiments in-process (the scripts that produce the README's tables).

Each job composes the real Hydra config with overrides, exactly like ``derelayl-train``, and runs
it with tracking off; ``run_batch`` spreads jobs over worker processes.
"""

from __future__ import annotations

import re
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[2]


def run_overrides(overrides: Sequence[str], out_dir: str | Path,
                  fresh: bool = True) -> dict[str, Any]:
    """One run of ``derelayl-train <overrides>`` into ``out_dir``; returns its metrics.json.

    ``fresh`` empties ``out_dir`` first (a DeRelayL run would otherwise resume what it finds).
    """
    import shutil

    import torch
    from hydra import compose, initialize_config_dir

    from derelayl.cli.train import config_dir
    from derelayl.app.pipeline import run_experiment

    torch.set_num_threads(1)
    out_dir = Path(out_dir)
    if fresh and out_dir.exists():
        shutil.rmtree(out_dir)
    base = [f"data_dir={ROOT}/data", "tracking=none",
            f"tracking.uri=sqlite:///{out_dir}/unused.db",
            f"tracking.artifact_location={out_dir}/unused"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=base + list(overrides))
    return run_experiment(cfg, out_dir)


def run_batch(jobs: Iterable[Any], fn: Callable[[Any], dict], workers: int = 2,
              progress: Callable[[Any, dict], None] | None = None) -> list[dict]:
    """``fn(job)`` for every job, ``workers`` processes at a time, in submission order."""
    jobs = list(jobs)
    if workers <= 1:
        results = []
        for job in jobs:
            results.append(fn(job))
            if progress:
                progress(job, results[-1])
        return results
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(fn, job) for job in jobs]
        results = []
        for job, fut in zip(jobs, futures):
            results.append(fut.result())
            if progress:
                progress(job, results[-1])
    return results


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def mean_std(values: Sequence[float], fmt: str) -> str:
    """``mean ± std`` with the sample std (ddof = 1), as derelayl-report; one value alone."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def replace_between(path: Path, start: str, end: str, text: str) -> None:
    """Replace what lies between two marker lines of a file (add both at the end if absent)."""
    doc = path.read_text()
    block = f"{start}\n{text}{end}"
    if start in doc and end in doc:
        doc = doc[:doc.index(start)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(doc)


def publish(md: str, rows: list[dict], table: Path, readme: Path | None = None,
            markers: tuple[str, str] = ("", ""), default: Callable[[Any], Any] = str) -> None:
    """A script's table: Markdown to ``table``, its rows as JSON beside it (``.json``),
    printed, and (with ``readme``) put between the README's two ``markers``."""
    import json

    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(md)
    table.with_suffix(".json").write_text(json.dumps(rows, indent=1, default=default))
    print(md)
    if readme is not None:
        replace_between(readme, *markers, md)
        print(f"updated {readme}")
