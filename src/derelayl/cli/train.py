"""``derelayl-train``: the Hydra application that runs one experiment (or a ``-m`` sweep)."""

from __future__ import annotations

import gc
import logging
import secrets
import sys
from pathlib import Path
from typing import cast

import hydra
from omegaconf import DictConfig, OmegaConf

from derelayl.app.config import register as register_schemas
from derelayl.sim.errors import ConfigError

log = logging.getLogger("derelayl")
PROG = "derelayl-train"
# the default run folder's suffix (conf/train.yaml: hydra.run.dir): drawn once per launching
# process, so runs started in the same second never share a folder
RUN_SUFFIX = secrets.token_hex(3)
OmegaConf.register_new_resolver("run_suffix", lambda: RUN_SUFFIX, use_cache=True, replace=True)
register_schemas()  # the config's structured schemas, before anything composes it


def config_dir() -> Path:
    """``conf/`` inside an installed wheel, else the source tree's top-level ``conf/``."""
    here = Path(__file__).resolve().parent.parent
    packaged = here / "conf"
    return packaged if packaged.is_dir() else here.parents[1] / "conf"


def fail(message: str, code: int = 2) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def check_group_choices(argv: list[str], conf: Path) -> None:
    """Reject an unknown ``group=option`` in one line, before Hydra prints a multi-line error."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in argv if not a.startswith("-") and "=" in a]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except Exception:  # leave syntax errors to Hydra's own message
        return
    for ov in overrides:
        key = ov.key_or_group
        group_dir = conf / key
        if ov.package is not None or not group_dir.is_dir() or key.startswith("hydra"):
            continue
        allowed = sorted(p.stem for p in group_dir.glob("*.yaml"))
        values = list(ov.sweep_iterator()) if ov.is_sweep_override() else [ov.value()]
        for value in values:
            if value is None or (isinstance(value, str) and value in allowed):
                continue
            fail(f"unknown {key} {value!r}; allowed: {', '.join(allowed)}")


def hydra_record(cfg: DictConfig):
    """What Hydra writes into a run folder (``.hydra/*.yaml``, the job's log file), for the
    pipeline to write once the run is accepted (``hydra.output_subdir`` is null in train.yaml,
    so Hydra itself writes nothing into a folder it might have to refuse)."""
    from hydra.core.hydra_config import HydraConfig

    from derelayl.io.run_folder import HydraRecord

    # the whole composed config (typed as its `hydra` node, HydraConf, which it holds)
    hydra_cfg = cast(DictConfig, HydraConfig.instance().cfg)
    return HydraRecord(
        documents={
            "config.yaml": OmegaConf.to_yaml(cfg),
            "hydra.yaml": OmegaConf.to_yaml(hydra_cfg),
            "overrides.yaml": OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task),
        },
        log_file=f"{HydraConfig.get().job.name}.log",
    )


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from derelayl.app.naming import group_choices

    # the group options this run was composed from: what it is (tags, report groups)
    chosen = group_choices(HydraConfig.get().runtime.choices)
    from derelayl.sim.errors import DataError

    output_dir = HydraConfig.get().runtime.output_dir
    try:  # every value's type and range first: a bad one is refused before torch is imported
        from derelayl.app.schema import check_config

        check_config(cfg)
    except ConfigError as err:
        from derelayl.io.run_folder import discard_created

        discard_created(output_dir)
        fail(str(err))
    from derelayl.io.mlflow import discard_spare_writer, open_writer

    writer = None
    if not cfg.tracking.enabled:
        discard_spare_writer()
    else:  # MLflow's import (in its own process) overlaps PyTorch's
        try:
            writer = open_writer(str(cfg.tracking.uri))
        except ConfigError as err:
            from derelayl.io.run_folder import discard_created

            discard_created(output_dir)
            fail(str(err))
    log.info(  # (a bad value has been refused in one line above, before PyTorch loads)
        "%s: %s on %s, seed %s; loading PyTorch ...",
        PROG,
        chosen.get("algorithm", "?"),
        chosen.get("dataset", "?"),
        cfg.seed,
    )
    from derelayl.app.pipeline import run_experiment
    from derelayl.io.signals import stop_on_signals

    try:
        with stop_on_signals():
            metrics = run_experiment(
                cfg,
                output_dir,
                hydra_record=hydra_record(cfg),
                run_name=launch_name(cfg, chosen),
                choices=chosen,
                writer=writer,
            )
    except (ConfigError, DataError) as err:
        fail(str(err))
    return optimized_value(cfg, metrics)


def launch_name(cfg: DictConfig, chosen: dict[str, str]) -> str | None:
    """The MLflow run name: the algorithm, data, seed and the command line's keys that differ
    from their defaults (compared with the config of the same group choices alone)."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    from derelayl.app import naming

    try:
        overrides = list(HydraConfig.get().overrides.task)
        groups = sorted(p.name for p in config_dir().iterdir() if p.is_dir())
        return naming.run_name(
            cfg,
            naming.varied(
                overrides,
                cfg,
                lambda choices: compose(config_name="train", overrides=list(choices)),
                groups,
            ),
            chosen=chosen,
        )
    except Exception as err:  # a name must never fail a run: fall back to the config's own
        log.debug("run name from the command line failed (%s)", err)
        return None


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # not inside a Hydra application
        return False


def optimized_value(cfg: DictConfig, metrics: dict) -> float | None:
    """The value a Hydra sweeper optimises: ``metrics[cfg.optimized_metric]`` (a validation
    metric by default; never the test split unless a user asks for it by name)."""
    key = cfg.get("optimized_metric") or "val_acc"
    value = metrics.get(key)
    if value is None and _in_sweep():  # (a single run has no sweeper to tell)
        log.warning(
            "optimized_metric %r is not reported by this run (metrics.json has: %s); "
            "a sweeper gets None",
            key,
            ", ".join(sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))),
        )
    return value


def main() -> None:
    from derelayl.cli import help as page
    from derelayl.cli.guard import one_line_errors

    with one_line_errors(PROG):
        check_group_choices(sys.argv[1:], config_dir())
        if page.wants_help(sys.argv[1:]):  # our page, fast (Hydra's own: --hydra-help)
            print(page.render(config_dir(), sys.argv[1:]))
            return
        from derelayl.io.mlflow import discard_spare_writer, start_spare_writer

        if not {"-m", "--multirun"} & set(sys.argv[1:]):  # (a sweep's jobs start their own)
            start_spare_writer()  # MLflow's import, beside Hydra's composing and PyTorch's
        try:
            hydra_main()
        finally:
            discard_spare_writer()  # (not taken: no tracking, a refused run, a sweep's launcher)
        # the run is over and its files closed: the interpreter's exit need not search the
        # millions of objects PyTorch and Lightning leave for cycles (~0.8 s)
        gc.freeze()


if __name__ == "__main__":
    main()
