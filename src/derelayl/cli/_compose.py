"""Compose ``conf/train.yaml`` outside ``@hydra.main`` (for the helper commands of the DVC stages).

The stages that prepare data must see exactly the config a training run sees, so they compose
the same primary config with the same overrides; only what needs Hydra's runtime (the launch
directory) is filled in here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from omegaconf import DictConfig


def compose_train_config(overrides: Sequence[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    from derelayl.cli.train import config_dir

    # the launch folder, which ${hydra:runtime.cwd} would be in a run
    defaults = [f"paths.root_dir={Path.cwd()}"]
    if any(o.split("=", 1)[0].lstrip("+~") == "paths.root_dir" for o in overrides):
        defaults = []
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=defaults + list(overrides))


def run_cli(prog: str, body: Callable[[], object]) -> None:
    """Run ``body``; bad input ends with one line on stderr and exit status 2."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from derelayl.sim.errors import ConfigError, DataError

    try:
        body()
    except (ConfigError, DataError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except (HydraException, OmegaConfBaseException) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"{prog}: error: {first}", file=sys.stderr)
        raise SystemExit(2) from None
