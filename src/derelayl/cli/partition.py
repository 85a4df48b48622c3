"""``derelayl-partition``: materialise the participants' index sets and label histograms
(DVC ``partition``).

    derelayl-partition --root data --seed 0 partition=dirichlet partition.alpha=0.5

reads the split written by ``derelayl-prepare`` under ``data/splits/seed0/`` and writes
``data/partitions/seed0/`` (indices, ``partition.json``, ``label_histogram.csv``) with the
partitioner a training run uses (``ExperimentContext.compute_partition``).
Any further arguments are Hydra overrides of ``conf/train.yaml``.
"""

from __future__ import annotations

from typing import Any, cast

from omegaconf import OmegaConf

from derelayl.app.naming import data_label

PROG = "derelayl-partition"


def partition(root: str, seeds: list[int] | None, overrides: list[str]) -> list:
    from derelayl.app.runners import ExperimentContext
    from derelayl.cli._compose import compose_train_config
    from derelayl.data.prepared import load_splits, partition_dir, save_partition, split_dir

    cfg = compose_train_config(overrides)
    written = []
    for seed in seeds or [int(cfg.seed)]:
        cfg.seed = seed
        ctx = ExperimentContext(cfg, partition_dir(root, seed))
        ctx.data = load_splits(
            split_dir(root, seed),
            seed=seed,
            dataset_cfg=cast(dict[str, Any], OmegaConf.to_container(cfg.dataset, resolve=True)),
        )
        part = ctx.compute_partition()
        hist = part.label_histogram(ctx.data.train_y.cpu().numpy(), ctx.data.num_classes)
        folder = save_partition(part, hist, partition_dir(root, seed), key=ctx.partition_key())
        sizes = part.sizes
        print(
            f"{PROG}: {data_label(cfg, {})} seed {seed}: {len(sizes)} participants, "
            f"sizes {sizes.min()}-{sizes.max()} -> {folder}"
        )
        written.append(folder)
    return written


def main(argv=None) -> None:
    from derelayl.cli._compose import run_cli
    from derelayl.cli.prepare import parse

    args, overrides = parse(argv, prog=PROG, doc=__doc__)
    run_cli(PROG, lambda: partition(args.root, args.seeds, overrides))


if __name__ == "__main__":
    main()
