"""Runs one experiment from a resolved config: the edge around the core.

Builds the context, attaches the observers (progress, history file, MLflow), calls the
algorithm's runner, and writes what every run leaves behind. Hydra's entry point is
``derelayl.cli.train``; tests call :func:`run_experiment` with a composed config.
"""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf

from derelayl.app import naming
from derelayl.app.runners import ExperimentContext, runner_of
from derelayl.app.schema import check_config as check_values
from derelayl.io.checkpoint import CHECKPOINT_FILE
from derelayl.io.console import ConsoleProgress
from derelayl.io.files import HISTORY_FILE, METRICS_FILE, HistoryCsv, write_json
from derelayl.io.run_folder import HydraRecord, RunFolder, discard_created
from derelayl.io.signals import critical
from derelayl.sim.errors import ConfigError, RunInterrupted

log = logging.getLogger("derelayl")
# the config group options the run was composed from (naming.choices): what derelayl-report
# groups run folders by
CHOICES_FILE = "choices.json"
SUMMARY_KEYS = ("test_acc", "test_loss", "best_quality", "coins_gini", "version_share_latest")


def summary_text(metrics: dict[str, Any]) -> str:
    """``test_acc 0.9370, test_loss 0.1977, ...``: the summary metrics a run has (a random-walk
    DeRelayL run has no test accuracy, but a best quality)."""
    return ", ".join(
        f"{k} {metrics[k]:.4f}"
        for k in SUMMARY_KEYS
        if isinstance(metrics.get(k), (int, float)) and not isinstance(metrics[k], bool)
    )


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as ``{"a.b.c": value}`` (MLflow params)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = node

    walk("", OmegaConf.to_container(cfg, resolve=True))
    return out


def git_commit() -> str:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                cwd=Path(__file__).parent,
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def validate_common(cfg: DictConfig) -> None:
    if cfg.num_participants < 1:
        raise ConfigError(f"num_participants must be >= 1 (got {cfg.num_participants})")
    if cfg.torch_threads < 1:
        raise ConfigError(f"torch_threads must be >= 1 (got {cfg.torch_threads})")


def reach_target(history: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """Simulated time, samples and bytes at the first evaluation with test_acc >= target."""
    out: dict[str, Any] = {
        "target_acc": target,
        "sim_time_to_target_s": None,
        "samples_to_target": None,
        "bytes_to_target": None,
    }
    for row in history:
        acc = row.get("test_acc")
        if acc is not None and acc >= target:
            out.update(
                sim_time_to_target_s=row.get("sim_time_s"),
                samples_to_target=row.get("samples_seen"),
                bytes_to_target=row.get("bytes"),
            )
            break
    return out


def _make_tracker(
    cfg: DictConfig, chosen: dict[str, str], run_name: str | None = None, writer=None, stale=()
):
    if not cfg.tracking.enabled:
        return None
    from derelayl.io.mlflow import MlflowTracker

    # what the run is: the group options it was composed from (Hydra's runtime choices)
    tags = {
        "git_commit": git_commit(),
        "seed": str(cfg.seed),
        **{g: chosen[g] for g in naming.GROUP_TAGS if g in chosen},
    }
    tracker = MlflowTracker(
        writer,
        cfg.tracking.experiment,
        stale=stale,
        artifact_location=cfg.tracking.artifact_location,
        run_name=cfg.tracking.get("run_name") or run_name or naming.run_name(cfg, chosen=chosen),
        tags=tags,
        parent_run_id=cfg.tracking.get("parent_run_id"),
        flush_every_s=cfg.tracking.get("flush_every_s", 1.0),
        max_points=cfg.tracking.get("max_points", 1000),
    )
    tracker.log_params(flatten(cfg))
    return tracker


# keys that may differ between two launches of the same job (a resumed sweep's parent run)
_RESUME_IGNORED = ("tracking.parent_run_id", "skip_finished")


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    flat = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = node

    walk("", config)
    return {k: v for k, v in flat.items() if k not in _RESUME_IGNORED}


def finished_metrics(cfg: DictConfig, output_dir: Path) -> dict[str, Any] | None:
    """metrics.json of a finished run of this same resolved config in ``output_dir``, else None."""
    import json

    import yaml

    metrics, config = output_dir / METRICS_FILE, output_dir / "config.yaml"
    if not (metrics.is_file() and config.is_file()):
        return None
    try:
        before = yaml.safe_load(config.read_text())
        done = json.loads(metrics.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    now = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    return done if _comparable(before) == _comparable(now) else None


def _without_hydra(
    cfg: DictConfig, choices: dict[str, str] | None
) -> tuple[DictConfig, dict[str, str]]:
    """The job's config without a ``hydra`` node, and the group choices (see run_experiment)."""
    chosen = naming.group_choices(choices) if choices is not None else naming.choices(cfg)
    if "hydra" in cfg:
        from omegaconf import open_dict

        cfg = cfg.copy()
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg, chosen


def _prepare(cfg: DictConfig, output_dir: Path, writer=None):
    """Everything that can refuse a run before its folder is claimed; nothing is written.

    ``writer``: the MLflow writer process if the caller started it already (``derelayl-train``
    starts it before importing PyTorch, so MLflow's import overlaps torch's); closed here if the
    run is refused or skipped."""
    try:
        check_values(cfg)
        if cfg.get("skip_finished"):
            done = finished_metrics(cfg, output_dir)
            if done is not None:  # a re-run sweep: this job finished before, with this config
                log.info(
                    "skipped: %s already holds a finished run of this config (%s)",
                    output_dir,
                    summary_text(done) or "no summary metrics",
                )
                if writer is not None:
                    writer.close()
                return done, None, None, None
        validate_common(cfg)
        runner = runner_of(cfg)
        runner.check_config(cfg)  # reject bad values before data, files or a tracking run exist
        if cfg.tracking.enabled and writer is None:
            from derelayl.io.mlflow import open_writer

            # MLflow is imported and the store opened beside this process, while it loads the rest
            writer = open_writer(str(cfg.tracking.uri))
        return _prepare_run(cfg, output_dir, runner, writer)
    except BaseException:
        if writer is not None:
            writer.close()
        raise


def _prepare_run(cfg: DictConfig, output_dir: Path, runner, writer):
    """The run's data, partition and hop (each can still refuse it), and the tracking store's
    answer; nothing is written."""
    torch.set_num_threads(int(cfg.torch_threads))
    # (its first call imports torch's compiler stack: ~1.5 s an economy skips)
    if runner.uses_data(cfg):
        torch.use_deterministic_algorithms(True)

    step = cfg.algorithm.get("step_unit", "hop")
    history = HistoryCsv(output_dir / HISTORY_FILE, level=step)
    progress = ConsoleProgress(every=cfg.get("progress_every", 1))
    ctx = ExperimentContext(cfg, output_dir, observers=[progress, history])
    ctx.runner = runner
    if runner.uses_data(cfg):
        log.info(
            "loading dataset %s and partitioning it (%s) ...",  # the loader names it
            str(cfg.dataset.get("_target_", "?")).rsplit(".", 1)[-1],
            naming.data_label(cfg),
        )
        # build (and so validate) the data and partition before anything is written, and how the
        # hops run: algorithm.execution=batched may refuse the model
        _ = ctx.partition
        _ = ctx.batched_hop
        runner.check_data(ctx)
    if writer is not None and writer.store_can_refuse:
        writer.ready()  # the store opened (or the one-line reason it cannot)
    ctx.writer = writer
    return None, runner, ctx, history


def run_experiment(
    cfg: DictConfig,
    output_dir: str | Path,
    hydra_record: HydraRecord | None = None,
    run_name: str | None = None,
    choices: dict[str, str] | None = None,
    writer=None,
) -> dict[str, Any]:
    """Run the configured experiment, write its files to ``output_dir``; return metrics.json.

    ``run_name`` names the MLflow run (default: ``tracking.run_name``, else a name built from
    the config, ``derelayl.app.naming.run_name``). ``choices`` are the config group options the
    config was composed from (Hydra's ``runtime.choices``; ``derelayl-train`` passes them): they
    tag the MLflow run and go to ``choices.json``. A config composed with
    ``return_hydra_config=True`` carries them itself (its ``hydra`` node is dropped here); any
    other config has none (no group tags). ``writer``: the run's MLflow writer process
    (:func:`derelayl.io.mlflow.open_writer`) if the caller started it early; else it is started
    here once the values are checked.

    Everything that can refuse the run (every value's type and range, the runner's own checks,
    the data and partition, the tracking server, the run folder and its lock) is decided before
    anything is written; ``hydra_record`` (``.hydra/`` and the log file) is written only then.
    """
    started = time.perf_counter()
    output_dir = Path(output_dir)
    cfg, chosen = _without_hydra(cfg, choices)
    try:
        done, runner, ctx, history = _prepare(cfg, output_dir, writer)
    except BaseException:
        discard_created(output_dir)  # the folder Hydra made for a run refused before it began
        raise
    if done is not None:
        return done
    folder = _claim(cfg, output_dir, ctx)
    tracker, status = None, "FAILED"
    try:
        folder.accept(hydra_record)
        if folder.state != "fresh":
            log.info(
                "%s holds an unfinished run of this config: resuming it"
                if folder.state == "resume"
                else "%s holds a finished run of this config: re-entering it",
                output_dir,
            )
        files = _write_inputs(cfg, output_dir, chosen, runner, ctx)
        if cfg.tracking.enabled:
            log.info("opening an MLflow run in %s ...", cfg.tracking.uri)
        with critical():  # the writer also closes the folder's runs a killed process left open
            tracker = _make_tracker(cfg, chosen, run_name, ctx.writer, stale=folder.tracked_runs())
        if tracker is not None:  # the folder notes the run as soon as the writer made it
            tracker.on_started(lambda run_id: folder.record_tracking(tracker.tracking_uri, run_id))
            ctx.observers.append(tracker)
            ctx.tracker = tracker
        outcome = runner(ctx)
        metrics = _write_outcome(
            cfg, output_dir, chosen, ctx, outcome, files, started=started, tracker=tracker
        )
        status = "FINISHED"
        if tracker is not None:
            _log_final(cfg, tracker, metrics, files)
        _say_done(cfg, output_dir, metrics, tracker)
        return metrics
    except (RunInterrupted, KeyboardInterrupt) as stop:
        status = "KILLED"
        if isinstance(stop, RunInterrupted):
            stop.run_dir = str(output_dir)
        raise
    finally:
        history.close()
        if tracker is not None:
            _end_tracker(tracker, status)
        folder.release()


def _say_done(cfg: DictConfig, output_dir: Path, metrics: dict[str, Any], tracker) -> None:
    log.info(
        "done: %s after %s hops (%s rounds) in %.1fs",
        summary_text(metrics),
        metrics.get("hops"),
        metrics.get("rounds"),
        metrics["wall_time_s"],
    )
    log.info(
        "results: %s%s",
        output_dir,
        f" | MLflow run {tracker.run_id} in {cfg.tracking.uri} (see: mlflow ui)" if tracker else "",
    )


def _claim(cfg: DictConfig, output_dir: Path, ctx: ExperimentContext) -> RunFolder:
    """The run folder, claimed for this config (the MLflow writer goes if it is refused)."""
    try:
        return RunFolder.claim(
            output_dir,
            cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True)),
            checkpoints=(CHECKPOINT_FILE,),
        )
    except BaseException:
        if ctx.writer is not None:
            ctx.writer.close()
        raise


def _write_inputs(
    cfg: DictConfig, output_dir: Path, chosen: dict[str, str], runner: Any, ctx: ExperimentContext
) -> list[Path]:
    """config.yaml, choices.json and (for a run with data) partition.json; their paths."""
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    write_json(output_dir / CHOICES_FILE, chosen)
    files = [output_dir / "config.yaml", output_dir / CHOICES_FILE]
    if runner.uses_data(cfg):
        sizes = ctx.partition.sizes
        write_json(
            output_dir / "partition.json",
            {"sizes": sizes.tolist(), "label_histogram": ctx.label_histogram.tolist()},
        )
        files.append(output_dir / "partition.json")
        log.info(
            "dataset %s: %d train / %d val / %d test samples, %d participants (%s), sizes %d-%d",
            ctx.data.name,
            len(ctx.data.train_y),
            len(ctx.data.val),
            len(ctx.data.test),
            len(sizes),
            naming.data_label(cfg, chosen),
            sizes.min(),
            sizes.max(),
        )
    return files


def _write_outcome(
    cfg: DictConfig,
    output_dir: Path,
    chosen: dict[str, str],
    ctx: ExperimentContext,
    outcome: Any,
    files: list[Path],
    *,
    started: float,
    tracker: Any,
) -> dict[str, Any]:
    """The run's metrics, model.pt and accuracy figure (added to ``files``), and metrics.json
    last: its presence marks a finished run."""
    metrics = dict(outcome.metrics)
    if cfg.get("target_acc") is not None:
        metrics.update(reach_target(outcome.history, float(cfg.target_acc)))
    metrics["wall_time_s"] = round(time.perf_counter() - started, 3)
    metrics["mlflow_run_id"] = tracker.run_id if tracker else None
    files += [output_dir / METRICS_FILE, output_dir / HISTORY_FILE, *outcome.files]
    if outcome.model is not None:
        torch.save(outcome.model.state_dict(), output_dir / "model.pt")
        files.append(output_dir / "model.pt")
    if outcome.history:
        from derelayl.reporting.plots import plot_accuracy  # matplotlib: only now

        files.append(
            plot_accuracy(
                outcome.history,
                output_dir / f"accuracy_vs_{outcome.step}s.png",
                outcome.step,
                title=f"{naming.algorithm_label(cfg, chosen)} on {ctx.data.name}, "
                f"{naming.data_label(cfg, chosen).split(' ')[-1]} split, "
                f"{cfg.num_participants} participants",
            )
        )
    write_json(output_dir / METRICS_FILE, metrics)  # last: its presence marks a finished run
    return metrics


def _log_final(cfg: DictConfig, tracker: Any, metrics: dict[str, Any], files: list[Path]) -> None:
    """The summary metrics (``final/<key>``) and the run's files, up to
    tracking.max_artifact_mb each, to MLflow."""
    last = max(int(metrics.get("hops") or 0), int(metrics.get("rounds") or 0))
    tracker.log_metrics(
        {
            f"final/{k}": v
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        },
        step=last,
    )
    limit = cfg.tracking.get("max_artifact_mb", 50) * 2**20
    large = [f for f in files if f.exists() and f.stat().st_size > limit]
    for f in large:
        log.info("not copied to MLflow (over tracking.max_artifact_mb): %s", f)
    tracker.log_artifacts([f for f in files if f not in large])


def _end_tracker(tracker: Any, status: str) -> None:
    try:
        tracker.end(status)
    except Exception as err:  # never hide why the run stopped behind a tracking error
        log.warning(
            "could not close MLflow run %s as %s: %s",
            tracker.known_run_id or "(not created)",
            status,
            str(err).splitlines()[0] if str(err) else type(err).__name__,
        )
