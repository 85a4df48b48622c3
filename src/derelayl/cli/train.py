"""``derelayl-train``: the Hydra application that runs one experiment (or a ``-m`` sweep)."""

from __future__ import annotations

import logging
import secrets
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from derelayl.core.errors import ConfigError
from derelayl.data import DataError

log = logging.getLogger("derelayl")
PROG = "derelayl-train"
# the default run folder's suffix (conf/train.yaml: hydra.run.dir): drawn once per launching
# process, so runs started in the same second never share a folder
RUN_SUFFIX = secrets.token_hex(3)
OmegaConf.register_new_resolver("run_suffix", lambda: RUN_SUFFIX, use_cache=True, replace=True)


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
            if value is None or isinstance(value, str) and value in allowed:
                continue
            fail(f"unknown {key} {value!r}; allowed: {', '.join(allowed)}")


def hydra_record(cfg: DictConfig):
    """What Hydra writes into a run folder (``.hydra/*.yaml``, the job's log file), for the
    pipeline to write once the run is accepted (``hydra.output_subdir`` is null in train.yaml,
    so Hydra itself writes nothing into a folder it might have to refuse)."""
    from hydra.core.hydra_config import HydraConfig

    from derelayl.tracking.rundir import HydraRecord

    hydra_cfg = HydraConfig.instance().cfg
    return HydraRecord(documents={
        "config.yaml": OmegaConf.to_yaml(cfg),
        "hydra.yaml": OmegaConf.to_yaml(hydra_cfg),
        "overrides.yaml": OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task),
    }, log_file=f"{HydraConfig.get().job.name}.log")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from derelayl.pipeline import run_experiment
    from derelayl.tracking.signals import stop_on_signals

    try:
        with stop_on_signals():
            metrics = run_experiment(cfg, HydraConfig.get().runtime.output_dir,
                                     hydra_record=hydra_record(cfg))
    except (ConfigError, DataError) as err:
        fail(str(err))
    return metrics.get("test_acc")  # the value a Hydra sweeper optimises


def main() -> None:
    from derelayl.cli.guard import one_line_errors

    with one_line_errors(PROG):
        check_group_choices(sys.argv[1:], config_dir())
        hydra_main()


if __name__ == "__main__":
    main()
