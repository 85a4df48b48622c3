"""``derelayl-prepare``: materialise a dataset's train / validation / test split (DVC ``prepare``).

    derelayl-prepare --root data --seed 0 dataset=digits

writes ``data/splits/seed0/`` with the same code a training run uses (``dataset._target_`` through
``ExperimentContext``); a run started with ``prepared_data=data`` then reads it back.
Any further arguments are Hydra overrides of ``conf/train.yaml``.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any, cast

from omegaconf import OmegaConf

PROG = "derelayl-prepare"
log = logging.getLogger("derelayl")


def parse(argv=None, prog=PROG, doc=__doc__):
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default="data", help="folder of the materialised data (data)")
    parser.add_argument(
        "--seed",
        type=int,
        action="append",
        dest="seeds",
        help="seed of the split (repeatable; default: the config's seed)",
    )
    return parser.parse_known_args(argv)


def prepare(root: str, seeds: list[int] | None, overrides: list[str]) -> list:
    from derelayl.app.runners import ExperimentContext
    from derelayl.cli._compose import compose_train_config
    from derelayl.data.prepared import save_splits, split_dir

    cfg = compose_train_config(overrides)
    written = []
    for seed in seeds or [int(cfg.seed)]:
        cfg.seed = seed
        ctx = ExperimentContext(cfg, split_dir(root, seed))
        folder = save_splits(
            ctx.data,
            split_dir(root, seed),
            seed=seed,
            dataset_cfg=cast(dict[str, Any], OmegaConf.to_container(cfg.dataset, resolve=True)),
        )
        print(
            f"{PROG}: {ctx.data.name} seed {seed}: {len(ctx.data.train_y)} train / "
            f"{len(ctx.data.val)} val / {len(ctx.data.test)} test -> {folder}"
        )
        written.append(folder)
    return written


def main(argv=None) -> None:
    from derelayl.cli._compose import run_cli

    args, overrides = parse(argv)
    run_cli(PROG, lambda: prepare(args.root, args.seeds, overrides))


if __name__ == "__main__":
    main()
