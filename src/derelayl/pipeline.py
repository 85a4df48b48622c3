"""Builds a run from a resolved config and executes it: data, partition, model, algorithm.

This is the edge between the configuration (OmegaConf) and the core (plain objects). Hydra's
application entry point lives in ``derelayl.cli.train``; tests call :func:`run_experiment`
directly with a composed config.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from derelayl.core.errors import ConfigError
from derelayl.core.participants import build_participants
from derelayl.core.relay import RelayRunner
from derelayl.core.seeding import derive_seed, numpy_rng
from derelayl.data import load_dataset
from derelayl.models.lit import ClassifierModule
from derelayl.reporting.plots import plot_accuracy_vs_hops
from derelayl.tracking.console import ConsoleProgress
from derelayl.tracking.files import HISTORY_FILE, METRICS_FILE, HistoryCsv, write_json
from derelayl.training.hop import LightningHop

log = logging.getLogger("derelayl")

ALGORITHMS = ("relay",)


def _named(node: DictConfig, **kwargs):
    """Instantiate a ``_target_`` node whose ``name`` key is only a label."""
    body = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "name"}
    return instantiate(body, **kwargs)


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as ``{"a.b.c": value}`` (MLflow params)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = node

    walk("", OmegaConf.to_container(cfg, resolve=True))
    return out


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def validate_common(cfg: DictConfig) -> None:
    if cfg.num_participants < 1:
        raise ConfigError(f"num_participants must be >= 1 (got {cfg.num_participants})")
    if cfg.torch_threads < 1:
        raise ConfigError(f"torch_threads must be >= 1 (got {cfg.torch_threads})")
    if cfg.algorithm.name not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {cfg.algorithm.name!r}; allowed: {', '.join(ALGORITHMS)}")


def build_model(cfg: DictConfig, input_shape, num_classes: int) -> ClassifierModule:
    torch.manual_seed(derive_seed(cfg.seed, "model_init"))
    net = instantiate(cfg.model.net, input_shape=list(input_shape), num_classes=num_classes)
    optimizer = instantiate(cfg.algorithm.optimizer)
    return ClassifierModule(net, optimizer)


def _make_tracker(cfg: DictConfig, tags: dict[str, str]):
    if not cfg.tracking.enabled:
        return None
    from derelayl.tracking.mlflow_tracker import MlflowTracker

    tracker = MlflowTracker(cfg.tracking.uri, cfg.tracking.experiment,
                            artifact_location=cfg.tracking.artifact_location,
                            run_name=cfg.tracking.run_name, tags=tags,
                            parent_run_id=cfg.tracking.get("parent_run_id"))
    tracker.log_params(flatten(cfg))
    return tracker


def run_experiment(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """Run the configured experiment, write its files to ``output_dir``; return metrics.json."""
    started = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    validate_common(cfg)
    torch.set_num_threads(int(cfg.torch_threads))
    torch.use_deterministic_algorithms(True)

    ds = cfg.dataset
    data = load_dataset(ds.name, seed=cfg.seed, val_fraction=ds.val_fraction,
                        test_fraction=ds.get("test_fraction", 0.15), root=ds.root,
                        download=ds.get("download", False), num_samples=ds.get("num_samples", 5000),
                        generator_seed=ds.get("generator_seed", 42),
                        max_train_samples=ds.get("max_train_samples"))
    partitioner = _named(cfg.partition)
    train_labels = data.train_y.numpy()
    partition = partitioner.split(train_labels, int(cfg.num_participants),
                                  numpy_rng(cfg.seed, "partition"))
    participants = build_participants(data.train_x, data.train_y, partition, cfg.seed)
    histogram = partition.label_histogram(train_labels, data.num_classes)
    model = build_model(cfg, data.input_shape, data.num_classes)
    algo = cfg.algorithm
    hop = LightningHop(batch_size=algo.batch_size, local_epochs=algo.local_epochs,
                       local_steps=algo.local_steps)
    schedule = _named(cfg.schedule)
    history = HistoryCsv(output_dir / HISTORY_FILE)
    observers = [ConsoleProgress(every=cfg.get("progress_every", 1)), history]
    runner = RelayRunner(hop, schedule, rounds=algo.rounds, seed=cfg.seed,
                         eval_every=algo.eval_every, observers=observers)

    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    partition_file = output_dir / "partition.json"
    write_json(partition_file, {"sizes": partition.sizes.tolist(),
                                "label_histogram": histogram.tolist()})
    log.info("dataset %s: %d train / %d val / %d test samples, %d participants (%s), sizes %d-%d",
             data.name, len(data.train_y), len(data.val), len(data.test), len(participants),
             cfg.partition.name, partition.sizes.min(), partition.sizes.max())

    tags = {"git_commit": git_commit(), "dataset": ds.name, "partition": cfg.partition.name,
            "algorithm": algo.name, "seed": str(cfg.seed), "model": cfg.model.name}
    tracker = _make_tracker(cfg, tags)
    if tracker is not None:
        runner.observers.observers.append(tracker)
    status = "FAILED"
    try:
        result = runner.run(model, participants, data.val, data.test)
        torch.save(result.model.state_dict(), output_dir / "model.pt")
        plot = plot_accuracy_vs_hops(result.history, output_dir / "accuracy_vs_hops.png",
                                     title=f"{algo.name} on {ds.name}, {cfg.partition.name} "
                                           f"split, {len(participants)} participants")
        metrics = {
            "test_acc": result.test_acc, "test_loss": result.test_loss,
            "val_acc": result.val_acc, "val_loss": result.val_loss,
            "best_val_acc": max(r.val_acc for r in result.history),
            "hops": result.hops, "rounds": result.rounds, "samples_seen": result.samples_seen,
            "wall_time_s": round(time.perf_counter() - started, 3),
            "mlflow_run_id": tracker.run_id if tracker else None,
        }
        write_json(output_dir / METRICS_FILE, metrics)
        status = "FINISHED"
        if tracker is not None:
            tracker.log_metrics({f"final/{k}": v for k, v in metrics.items()
                                 if isinstance(v, (int, float)) and v is not None}, step=result.hops)
            tracker.log_metrics({"best/val_acc": metrics["best_val_acc"]}, step=result.hops)
            tracker.log_artifacts([output_dir / "config.yaml", output_dir / METRICS_FILE,
                                   output_dir / HISTORY_FILE, plot, partition_file,
                                   output_dir / "model.pt"])
        log.info("done: test_acc %.4f test_loss %.4f after %d hops (%d rounds) in %.1fs",
                 metrics["test_acc"], metrics["test_loss"], metrics["hops"], metrics["rounds"],
                 metrics["wall_time_s"])
        log.info("results: %s%s", output_dir,
                 f" | MLflow run {tracker.run_id} in {cfg.tracking.uri} (see: mlflow ui)"
                 if tracker else "")
        return metrics
    finally:
        history.close()
        if tracker is not None:
            tracker.end(status)
