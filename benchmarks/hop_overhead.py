"""Product relay vs a plain PyTorch loop doing the same hops, batches and optimizer steps.

Default MLP on MNIST-1D, 100 participants x 300 samples, one round. Both sides validate after
every hop, as the product does. Repeats interleaved, best time each; last line: ``ratio <x>``.

    python benchmarks/hop_overhead.py [--rounds 1] [--repeats 3] [--trainer]

``--trainer`` also times a ``pl.Trainer`` per hop, for reference (not part of the ratio).
"""

from __future__ import annotations

import copy
import functools
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from derelayl.algorithms.relay import RelayRunner
from derelayl.algorithms.schedules import RingSchedule
from derelayl.data.datasets import load_dataset
from derelayl.data.participants import build_participants
from derelayl.data.partition import IIDPartitioner
from derelayl.learning.evaluation import evaluate
from derelayl.learning.hop import LightningHop
from derelayl.models.lit import ClassifierModule
from derelayl.models.nets import MLP
from derelayl.sim.seeding import numpy_rng, torch_generator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import best_of, common_args

N, PER = 100, 300
BATCH, LR = 16, 0.02


def setup():
    ds = load_dataset("mnist1d", seed=0, num_samples=int(N * PER / 0.7) + 10)
    x, y = ds.train_x[: N * PER], ds.train_y[: N * PER]
    part = IIDPartitioner().split(y.numpy(), N, numpy_rng(0, "partition"))
    parts = build_participants(x, y, part, 0)
    torch.manual_seed(0)
    net = MLP(ds.input_shape, ds.num_classes, hidden=(128,))
    return ds, parts, net


def product(ds, parts, net, rounds):
    module = ClassifierModule(
        copy.deepcopy(net), functools.partial(torch.optim.SGD, lr=LR, momentum=0.9)
    )
    runner = RelayRunner(
        LightningHop(batch_size=BATCH), RingSchedule(), rounds=rounds, seed=0, eval_every=10**9
    )
    t = time.perf_counter()
    result = runner.run(module, parts, ds.val, ds.test)
    return time.perf_counter() - t, result.model.net


def plain(ds, parts, net, rounds):
    net = copy.deepcopy(net)
    t = time.perf_counter()
    for rnd in range(1, rounds + 1):
        for p in parts:
            gen = torch_generator(0, "hop", rnd, p.pid)
            opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=0.9)
            net.train()
            perm = torch.randperm(len(p), generator=gen)
            for start in range(0, len(p), BATCH):
                idx = perm[start : start + BATCH]
                loss = F.cross_entropy(net(p.x[idx]), p.y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            evaluate(net, ds.val)
    evaluate(net, ds.test)
    return time.perf_counter() - t, net


def trainer_per_hop(ds, parts, net, rounds):
    import logging

    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    module = ClassifierModule(
        copy.deepcopy(net), functools.partial(torch.optim.SGD, lr=LR, momentum=0.9)
    )
    t = time.perf_counter()
    for rnd in range(1, rounds + 1):
        for p in parts:
            loader = DataLoader(
                TensorDataset(p.x, p.y),
                batch_size=BATCH,
                shuffle=True,
                generator=torch_generator(0, "hop", rnd, p.pid),
            )
            trainer = pl.Trainer(
                max_epochs=1,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                accelerator="cpu",
                devices=1,
            )
            trainer.fit(module, loader)
            evaluate(module, ds.val)
    return time.perf_counter() - t


def main():
    ap = common_args(__doc__.splitlines()[0], rounds=1)
    ap.add_argument("--trainer", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds, parts, net = setup()
    print(
        f"{N} participants x {PER} samples, MLP(128), batch {BATCH}, {args.rounds} round(s), "
        f"{args.threads} thread(s)"
    )
    best_p, best_q, _net_p, _net_q, same = best_of(
        args.repeats, plain, product, ds, parts, net, args.rounds
    )
    print(f"plain PyTorch loop: {best_q:.3f}s")
    print(f"product relay:      {best_p:.3f}s (same final weights: {same})")
    if args.trainer:
        tt = trainer_per_hop(ds, parts, net, args.rounds)
        print(f"pl.Trainer per hop: {tt:.3f}s (ratio {tt / best_q:.2f}, reference only)")
    print(f"ratio {best_p / best_q:.3f}")


if __name__ == "__main__":
    main()
