"""Product FedAvg vs a plain PyTorch FedAvg loop doing the same steps, in the same process.

Digits (default split), 20 clients (IID), 20 rounds, full participation, 1 local epoch, batch 10,
plain SGD, the default MLP. Both sides evaluate the global model on the validation split after
every round, as the product does. Repeats interleaved, best time each; last line: ``ratio <x>``.

    python benchmarks/fedavg_overhead.py [--rounds 20] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import copy
import functools
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from derelayl.algorithms.fl.runner import FederatedRunner
from derelayl.algorithms.fl.strategies import FedAvg
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

N, BATCH, LR, EPOCHS = 20, 10, 0.05, 1


def setup():
    ds = load_dataset("digits", seed=0)
    part = IIDPartitioner().split(ds.train_y.numpy(), N, numpy_rng(0, "partition"))
    parts = build_participants(ds.train_x, ds.train_y, part, 0)
    torch.manual_seed(0)
    return ds, parts, MLP(ds.input_shape, ds.num_classes, hidden=(128,))


def product(ds, parts, net, rounds):
    module = ClassifierModule(copy.deepcopy(net), functools.partial(torch.optim.SGD, lr=LR))
    runner = FederatedRunner(
        LightningHop(batch_size=BATCH, local_epochs=EPOCHS),
        FedAvg(),
        seed=0,
        clients_per_round=N,
        rounds=rounds,
        eval_every=10**9,
    )
    t = time.perf_counter()
    result = runner.run(module, parts, ds.val, ds.test)
    return time.perf_counter() - t, result.model.net


def plain(ds, parts, net, rounds):
    """FedAvg as a researcher writes it in plain PyTorch."""
    global_net = copy.deepcopy(net)
    local = copy.deepcopy(net)
    sizes = torch.tensor([len(p) for p in parts], dtype=torch.float64)
    weights = (sizes / sizes.sum()).tolist()
    t = time.perf_counter()
    for rnd in range(1, rounds + 1):
        new = {k: torch.zeros_like(v) for k, v in global_net.state_dict().items()}
        for p, w in zip(parts, weights):
            local.load_state_dict(global_net.state_dict())
            opt = torch.optim.SGD(local.parameters(), lr=LR)
            local.train()
            gen = torch_generator(0, "hop", rnd, p.pid)
            for _ in range(EPOCHS):
                perm = torch.randperm(len(p), generator=gen)
                for start in range(0, len(p), BATCH):
                    idx = perm[start : start + BATCH]
                    loss = F.cross_entropy(local(p.x[idx]), p.y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            for k, v in local.state_dict().items():
                new[k].add_(v, alpha=w)
        global_net.load_state_dict(new)
        evaluate(global_net, ds.val)
    evaluate(global_net, ds.test)
    return time.perf_counter() - t, global_net


def main():
    ap = common_args(__doc__.splitlines()[0], rounds=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds, parts, net = setup()
    print(
        f"digits, {N} clients (IID) x {args.rounds} rounds, full participation, "
        f"E={EPOCHS}, B={BATCH}, MLP(128), {args.threads} thread(s)"
    )
    best_p, best_q, net_p, net_q, same = best_of(
        args.repeats, plain, product, ds, parts, net, args.rounds
    )
    close = all(
        torch.allclose(a, b, atol=1e-5) for a, b in zip(net_p.parameters(), net_q.parameters())
    )
    print(f"plain PyTorch FedAvg: {best_q:.3f}s")
    print(
        f"product FedAvg:       {best_p:.3f}s (same final weights: {same}, allclose 1e-5: {close})"
    )
    print(f"ratio {best_p / best_q:.3f}")


if __name__ == "__main__":
    main()
