"""Hydra callback for ``-m`` sweeps: one MLflow parent run per sweep, and sweep progress.

In the launching process (``on_multirun_start``) it creates the experiment once (many jobs
creating the same sqlite store at once race) and a parent run, and hands the parent's id to
every job as the override ``tracking.parent_run_id=<id>``: it is appended to
``hydra.overrides.hydra``, which every launcher (basic, joblib, submitit, ray) re-applies when it
composes a job's config, so the id travels with the job's config to any machine. The id is kept in
``<sweep dir>/sweep.json``: re-running an interrupted sweep into the same ``hydra.sweep.dir`` reuses
the parent run, and finished jobs are skipped by ``skip_finished``.

In each job (``on_job_end``) it marks the job done under ``<sweep dir>/.done/`` and logs
``sweep progress: k/n jobs done``, counted across processes and machines through that folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, cast

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from derelayl.app import naming

log = logging.getLogger("derelayl")
STATE_FILE = "sweep.json"
DONE_DIR = ".done"


def count_jobs(config: DictConfig) -> int | None:
    """Jobs the sweep will launch: Optuna's ``n_trials``, else the basic sweeper's product."""
    sweeper = config.hydra.sweeper
    if "n_trials" in sweeper:
        return int(sweeper.n_trials)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    # as the basic sweeper does: the config's sweeper.params, then the command line, which
    # wins for a key in both (experiment=paper_robustness seed=0 runs one seed)
    params = sweeper.get("params") or {}
    args = [f"{k}={v}" for k, v in params.items()]
    args += cast(list[str], OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    try:
        by_key = {ov.get_key_element(): ov for ov in OverridesParser.create().parse_overrides(args)}
        total = 1
        for ov in by_key.values():
            if ov.is_sweep_override():
                total *= len(list(ov.sweep_iterator()))
        return total
    except Exception:  # glob sweeps etc.: unknown in advance
        return None


def _read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _is_multirun(config: DictConfig) -> bool:
    from hydra.types import RunMode

    mode = config.hydra.get("mode")
    return mode == RunMode.MULTIRUN or str(mode) == "MULTIRUN"


class SweepCallback(Callback):
    def __init__(self, parent_run: bool = True, progress: bool = True):
        self.parent_run = parent_run
        self.progress = progress
        self._client: Any = None  # an MlflowClient once the sweep tracks
        self._parent_id: str | None = None

    # -- launching process ---------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        # Hydra sets HydraConfig only inside each job: without it the default
        # tracking.uri (sqlite:///${hydra:runtime.cwd}/mlflow.db) cannot resolve here
        if not HydraConfig.initialized():
            HydraConfig.instance().set_config(config)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        state_path = sweep_dir / STATE_FILE
        state = _read_state(state_path)
        state["total_jobs"] = count_jobs(config)
        state["overrides"] = list(
            cast(list[str], OmegaConf.to_container(config.hydra.overrides.task))
        )
        done = len(list((sweep_dir / DONE_DIR).glob("*"))) if (sweep_dir / DONE_DIR).is_dir() else 0
        if done:
            log.info("sweep %s: resuming, %d job(s) already done", sweep_dir, done)
        tracking = config.get("tracking")
        if (
            self.parent_run
            and tracking is not None
            and tracking.get("enabled")
            and not tracking.get("parent_run_id")
        ):
            self._parent_id = self._start_parent(config, sweep_dir, state)
            state["parent_run_id"] = self._parent_id
            state["tracking_uri"] = str(tracking.uri)
            with read_write(config.hydra.overrides), open_dict(config.hydra.overrides):
                config.hydra.overrides.hydra.append(f"tracking.parent_run_id={self._parent_id}")
        state_path.write_text(json.dumps(state, indent=2) + "\n")
        log.info(
            "sweep %s: %s jobs%s",
            sweep_dir,
            state["total_jobs"] or "?",
            f", MLflow parent run {self._parent_id}" if self._parent_id else "",
        )

    def _start_parent(self, config: DictConfig, sweep_dir: Path, state: dict[str, Any]) -> str:
        from derelayl.io.mlflow import get_or_create_experiment
        from derelayl.io.mlflow_store import open_client

        tracking = config.tracking
        self._client = client = open_client(str(tracking.uri))  # created under a lock
        exp_id = get_or_create_experiment(client, tracking.experiment, tracking.artifact_location)
        previous = state.get("parent_run_id")
        if previous and state.get("tracking_uri") == str(tracking.uri):
            try:
                client.update_run(previous, status="RUNNING")
                # jobs killed with the last attempt never ended their runs: close them
                for run in self._children(previous):
                    if run.info.status == "RUNNING":
                        client.set_terminated(run.info.run_id, "KILLED")
                log.info("sweep %s: continuing MLflow parent run %s", sweep_dir, previous)
                return previous
            except Exception:  # deleted, or another store: start a new parent
                pass
        overrides = " ".join(state["overrides"])
        # named by its study and what it varies, and tagged with the varied values (a sweep over
        # algorithm=fedavg,scaffold is tagged "algorithm: fedavg,scaffold", not the default's)
        sweeper = config.hydra.sweeper
        optuna = "n_trials" in sweeper
        params = sweeper.get("params")
        axes = naming.sweep_axes(
            cast(dict[str, Any], OmegaConf.to_container(params)) if params else {},
            state["overrides"],
        )
        chosen = naming.choices(config)
        study = (
            (sweeper.get("study_name") if optuna else None)
            or chosen.get("study")
            or chosen.get("experiment")
        )
        name = naming.sweep_name(str(study) if study else None, axes, state["total_jobs"], optuna)
        run = client.create_run(
            exp_id,
            run_name=name,
            tags={
                "derelayl.sweep": "parent",
                "sweep_dir": str(sweep_dir.resolve()),
                "sweep_overrides": overrides[:5000],
                **naming.sweep_tags(chosen, axes),
                "mlflow.note.content": f"Sweep `{overrides}` in `{sweep_dir}`: "
                f"{state['total_jobs'] or '?'} jobs; its runs are the nested "
                f"child runs.",
            },
        )
        return run.info.run_id

    def _children(self, parent: str) -> list:
        exp_id = self._client.get_run(parent).info.experiment_id
        return self._client.search_runs(
            [exp_id], f"tags.`mlflow.parentRunId` = '{parent}'", max_results=10000
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._client is None or self._parent_id is None:
            return
        client, parent = self._client, self._parent_id
        children = [r for r in self._children(parent) if r.info.status != "KILLED"]
        finished = [r for r in children if r.info.status == "FINISHED"]
        metrics = {
            "sweep/jobs_finished": len(finished),
            "sweep/jobs_failed": sum(r.info.status == "FAILED" for r in children),
        }
        # what the sweep optimised (a validation metric), and the test accuracy, reported
        for key in dict.fromkeys([str(config.get("optimized_metric") or "val_acc"), "test_acc"]):
            vals = [
                r.data.metrics[f"final/{key}"] for r in finished if f"final/{key}" in r.data.metrics
            ]
            if vals:
                metrics.update({f"best/{key}": max(vals), f"mean/{key}": sum(vals) / len(vals)})
        for key, value in metrics.items():
            client.log_metric(parent, key, float(value))
        client.set_terminated(parent, "FINISHED" if len(finished) == len(children) else "FAILED")

    # -- each job's process --------------------------------------------------------------------
    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if not self.progress or not _is_multirun(config):
            return
        from hydra.core.utils import JobStatus

        if job_return is not None and job_return.status != JobStatus.COMPLETED:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        done_dir = sweep_dir / DONE_DIR
        done_dir.mkdir(parents=True, exist_ok=True)
        (done_dir / str(config.hydra.job.num)).touch()
        total = _read_state(sweep_dir / STATE_FILE).get("total_jobs")
        done = len(list(done_dir.glob("*")))
        log.info(
            "sweep progress: %d/%s jobs done (job #%s finished)",
            done,
            total or "?",
            config.hydra.job.num,
        )
