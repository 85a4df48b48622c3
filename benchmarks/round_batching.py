"""A round's K hops as one batched computation against the same K hops one after another.

Reference: a plain PyTorch loop (per hop: a fresh SGD with momentum, the hop's batches, backward,
step), the same batches as the product's hops. Product: ``BatchedHop`` (``algorithm.execution=
batched``), K models stacked and trained with ``torch.func.vmap``. Both start from the same
weights; the weights they end with are compared (max abs difference). Repeats interleaved, best
time each. Workload as in the issue: 256 samples a participant, 1 epoch of batch 32.

    python benchmarks/round_batching.py                    # CPU: MLP on 1x8x8, K = 64
    python benchmarks/round_batching.py --device cuda      # GPU: also the CNN on 3x32x32,
                                                           # K = 64, 512

Last line: ``ratio <x>`` (CPU MLP at K = 64: reference time / batched time).
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import time

import torch
import torch.nn.functional as F

from derelayl.data.participants import ParticipantData
from derelayl.learning.batched import BatchedHop, StackedData, stack_states
from derelayl.models.lit import ClassifierModule
from derelayl.models.nets import CNN, MLP
from derelayl.sim.seeding import torch_generator

SAMPLES, BATCH, EPOCHS, LR = 256, 32, 1, 0.02


def workload(k: int, shape: tuple[int, ...], device: str, net: str):
    g = torch.Generator().manual_seed(0)
    parts = [
        ParticipantData(
            i,
            torch.randn((SAMPLES, *shape), generator=g).to(device),
            torch.randint(0, 10, (SAMPLES,), generator=g).to(device),
        )
        for i in range(k)
    ]
    torch.manual_seed(0)
    model = (MLP(shape, 10) if net == "mlp" else CNN(shape, 10)).to(device)
    return parts, model


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reference(parts, model, device):
    """K hops one after another, in plain PyTorch."""
    init = copy.deepcopy(model.state_dict())
    out = []
    sync(device)
    start = time.perf_counter()
    for i, p in enumerate(parts):
        model.load_state_dict(init)
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
        gen = torch_generator(0, "hop", 1, i)
        for _ in range(EPOCHS):
            perm = torch.randperm(len(p), generator=gen).to(device)
            for s in range(0, len(p), BATCH):
                idx = perm[s : s + BATCH]
                loss = F.cross_entropy(model(p.x[idx]), p.y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        out.append([t.detach().clone() for t in model.parameters()])
    sync(device)
    return time.perf_counter() - start, out


def batched(parts, model, device):
    mod = ClassifierModule(model, functools.partial(torch.optim.SGD, lr=LR, momentum=0.9))
    names = [n for n, _ in mod.named_parameters()]
    state = {n: p.detach() for n, p in mod.named_parameters()}
    data = StackedData.of(parts, device)
    hop = BatchedHop(batch_size=BATCH, local_epochs=EPOCHS)
    sync(device)
    start = time.perf_counter()
    stacked = stack_states([state] * len(parts), names, device)
    hop(
        mod,
        stacked,
        data,
        list(range(len(parts))),
        [torch_generator(0, "hop", 1, i) for i in range(len(parts))],
    )
    sync(device)
    return time.perf_counter() - start, stacked


def compare(k, shape, device, net, repeats, with_reference=True):
    parts, model = workload(k, shape, device, net)
    best_r = best_b = float("inf")
    ref = stacked = None
    for _ in range(repeats):
        if with_reference:
            t, ref = reference(parts, copy.deepcopy(model), device)
            best_r = min(best_r, t)
        t, stacked = batched(parts, copy.deepcopy(model), device)
        best_b = min(best_b, t)
    diff = None
    if ref is not None:
        diff = max(
            float((stacked[j][i] - w).abs().max())
            for i, ws in enumerate(ref)
            for j, w in enumerate(ws)
        )
    return best_r, best_b, diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--k", type=int, default=64, help="hops in the round (CPU MLP)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads, both sides (default: every core)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        for k in (64, 512):
            r, b, diff = compare(k, (3, 32, 32), args.device, "cnn", args.repeats)
            print(
                f"{torch.cuda.get_device_name()}: CNN 3x32x32, K={k}: one after another "
                f"{k / r:,.0f} hops/s, batched {k / b:,.0f} hops/s ({r / b:.1f}x; "
                f"max weight difference {diff:.1e})"
            )
    r, b, diff = compare(args.k, (1, 8, 8), "cpu", "mlp", args.repeats)
    print(
        f"CPU ({args.threads} threads): MLP 1x8x8, K={args.k}: one after another "
        f"{args.k / r:,.0f} hops/s, batched {args.k / b:,.0f} hops/s "
        f"(max weight difference {diff:.1e})"
    )
    print(f"ratio {r / b:.2f}")


if __name__ == "__main__":
    main()
