"""A Hydra launcher that runs each job of a ``-m`` sweep as a Ray task on a Ray cluster.

Hydra's own Ray plugin (``hydra-ray-launcher`` 1.2) pins ``cloudpickle==2.2.1`` and old
``ray``/``packaging`` versions, which would downgrade what MLflow and joblib use here; this
launcher needs only ``ray`` (``pip install "derelayl[ray]"``). Hydra finds it as the plugin class
``hydra_plugins.derelayl_ray_launcher.ray_launcher.RayLauncher`` (preset
``conf/hydra/launcher/ray_cluster.yaml``); the work is done here.

How a job runs, and why:

- The launching process composes every job's config (as Hydra's joblib and submitit launchers
  do), so ``hydra.runtime.cwd`` and the sweep callback's ``tracking.parent_run_id`` are the
  launching process's, whichever node runs the job.
- Each job is one ``ray.remote`` task with the resources of ``ray.remote`` (``num_cpus``
  defaults to ``torch_threads``). It first changes to the launching folder, so relative paths
  (``hydra.sweep.dir``) mean the same on every node: that folder must be on a file system all
  nodes share, the same requirement as SLURM's.
- Ray workers get the environment of the node's Ray daemon, not the launching shell's: the
  variables named in ``env_vars`` (MLflow's URI and credentials by default) are copied from the
  launching process into the job (``runtime_env``).
- ``max_retries`` re-runs a job whose worker or node died; a retried job starts again in the same
  folder (``skip_finished`` returns a finished run; DeRelayL resumes from its checkpoint).
- A job that exits with a status (bad input: one line on stderr, status 2) ends the sweep with
  that status once the other jobs are done; no cluster at the address is one line and status 2.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobExit:
    """A job ended with ``SystemExit(code)``: carried back to the launching process."""

    code: int
    job: int


def launch(
    launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> list[JobReturn]:
    # every job's progress lines, not "[repeated 3x across cluster]" (read when ray is imported)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray

    setup_globals()
    config = launcher.config
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)

    settings = cast(dict[str, Any], OmegaConf.to_container(launcher.ray, resolve=True))
    init = dict(settings.get("init") or {})
    remote = {k: v for k, v in (settings.get("remote") or {}).items() if v is not None}
    forwarded = {
        name: os.environ[name] for name in settings.get("env_vars") or () if name in os.environ
    }
    if forwarded:
        runtime_env = dict(init.get("runtime_env") or {})
        runtime_env["env_vars"] = {**forwarded, **(runtime_env.get("env_vars") or {})}
        init["runtime_env"] = runtime_env
    if not ray.is_initialized():
        join(ray, init)
    log.info(
        "Ray (%s) is launching %d jobs, sweep folder %s",
        ray.get_runtime_context().gcs_address,
        len(job_overrides),
        sweep_dir,
    )

    singleton_state = Singleton.get_state()
    task = ray.remote(execute_job).options(**remote)
    refs = []
    for offset, overrides in enumerate(job_overrides):
        idx = initial_job_idx + offset
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        sweep_config = launcher.hydra_context.config_loader.load_sweep_config(
            config, list(overrides)
        )
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
            sweep_config.hydra.job.num = idx
        refs.append(
            task.remote(
                launcher.hydra_context, sweep_config, launcher.task_function, singleton_state
            )
        )
    results = ray.get(refs)
    exits = [r for r in results if isinstance(r, JobExit)]
    if exits:
        raise SystemExit(exits[0].code)
    return cast(list[JobReturn], results)  # no JobExit among them


def join(ray: Any, init: dict[str, Any]) -> None:
    """``ray.init``, or one line and exit status 2 where no cluster answers (Ray itself would
    retry a wrong address for minutes)."""
    address = init.get("address")
    where = "hydra.launcher.ray.init.address or RAY_ADDRESS"
    if address and address not in ("auto", "local") and "://" not in address:
        host, _, port = str(address).rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=10).close()
        except (OSError, ValueError):
            fail(
                f"no Ray cluster answers at {address} ({where}); start one with `ray start --head`"
            )
    try:
        ray.init(**init)
    except ConnectionError as err:
        fail(f"cannot join a Ray cluster at {address} ({where}): {str(err).splitlines()[0]}")


def fail(message: str) -> None:
    print(f"derelayl-train: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def execute_job(
    hydra_context: Any,
    sweep_config: DictConfig,
    task_function: Any,
    singleton_state: dict[Any, Any],
) -> JobReturn | JobExit:
    """One job, on whichever node Ray chose: what Hydra's joblib launcher does in a process."""
    from hydra.core.hydra_config import HydraConfig

    setup_globals()
    Singleton.set_state(singleton_state)
    cwd = str(sweep_config.hydra.runtime.cwd)
    if not os.path.isdir(cwd):
        raise RuntimeError(
            f"the launching folder {cwd} does not exist on node "
            f"{socket.gethostname()}: run the sweep from a folder that every "
            f"node of the Ray cluster shares"
        )
    os.chdir(cwd)
    HydraConfig.instance().set_config(sweep_config)
    try:
        return run_job(
            hydra_context=hydra_context,
            config=sweep_config,
            task_function=task_function,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
        return JobExit(code, int(sweep_config.hydra.job.num))
