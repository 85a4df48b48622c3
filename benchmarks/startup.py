"""How fast every command answers, and what the framework costs a short job end to end.

Measured in fresh processes (best of ``--repeats``), as a user runs them:

- ``derelayl-train --help``, a bad value (one line, exit 2), ``derelayl-ledger --help``,
  ``derelayl-report --help``;
- a 20-round FedAvg on digits (20 clients, 2 a round, 5 local epochs, batch 10, an MLP) with
  MLflow tracking on, against a plain-PyTorch script of the same job (same data, the same kind of
  split, model, optimizer and rounds, evaluated every round; no tracking, no files).

    python benchmarks/startup.py [--repeats 3]

Last line: ``ratio <x>`` (the FedAvg job's wall time over the plain script's).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAIN = r"""
import numpy as np, torch, torch.nn.functional as F
from sklearn.datasets import load_digits
torch.set_num_threads(1); torch.manual_seed(0); rng = np.random.default_rng(0)
d = load_digits(); x = torch.tensor(d.images[:, None] / 16.0, dtype=torch.float32)
y = torch.tensor(d.target); perm = rng.permutation(len(y))
test, val, train = perm[:270], perm[270:540], perm[540:]
x = (x - x[train].mean()) / (x[train].std() + 1e-6)
# Dirichlet(0.5) label skew over 20 clients
parts = [[] for _ in range(20)]
for k in range(10):
    idx = rng.permutation(train[y[train].numpy() == k])
    cuts = (np.cumsum(rng.dirichlet(np.full(20, 0.5))) * len(idx)).astype(int)[:-1]
    for j, chunk in enumerate(np.split(idx, cuts)):
        parts[j] += chunk.tolist()
net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(),
                          torch.nn.Linear(128, 10))
glob = [p.detach().clone() for p in net.parameters()]
for rnd in range(20):
    chosen = rng.choice(20, 2, replace=False)
    sizes = np.array([max(len(parts[c]), 1) for c in chosen], dtype=float)
    new = [torch.zeros_like(g) for g in glob]
    for c, w in zip(chosen, sizes / sizes.sum()):
        with torch.no_grad():
            for p, g in zip(net.parameters(), glob): p.copy_(g)
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
        idx = torch.tensor(parts[c], dtype=torch.long)
        for _ in range(5):
            for b in torch.randperm(len(idx)).split(10):
                loss = F.cross_entropy(net(x[idx[b]]), y[idx[b]])
                opt.zero_grad(); loss.backward(); opt.step()
        for n_, p in zip(new, net.parameters()): n_ += w * p.detach()
    glob = new
    with torch.no_grad():
        for p, g in zip(net.parameters(), glob): p.copy_(g)
        for split in (val, test):
            acc = (net(x[split]).argmax(1) == y[split]).float().mean().item()
print("test_acc", acc)
"""


def timed(cmd: list[str], cwd: Path, repeats: int, expect: int = 0) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if proc.returncode != expect:
            raise SystemExit(
                f"{' '.join(cmd[:4])}... exited {proc.returncode}: "
                f"{proc.stderr.strip().splitlines()[-1:]}"
            )
        best = min(best, elapsed)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        train = [py, "-m", "derelayl.cli.train"]
        rows = [
            ("derelayl-train --help", timed([*train, "--help"], cwd, args.repeats)),
            (
                "derelayl-train partition.alpha=-1 (one line, exit 2)",
                timed([*train, "partition.alpha=-1"], cwd, args.repeats, expect=2),
            ),
            (
                "derelayl-ledger --help",
                timed([py, "-m", "derelayl.cli.ledger", "--help"], cwd, args.repeats),
            ),
            (
                "derelayl-report --help",
                timed([py, "-m", "derelayl.cli.report", "--help"], cwd, args.repeats),
            ),
        ]
        for name, seconds in rows:
            print(f"{name}: {seconds:.2f}s")
        # the store exists (a user's second run): its creation is a one-off
        subprocess.run(
            [*train, "algorithm=fedavg", "algorithm.rounds=1", "hydra.run.dir=warm"],
            cwd=cwd,
            capture_output=True,
        )
        job = [*train, "algorithm=fedavg", "algorithm.rounds=20", "algorithm.clients_per_round=2"]
        product = min(timed([*job, f"hydra.run.dir=run{i}"], cwd, 1) for i in range(args.repeats))
        plain = timed([py, "-c", PLAIN], cwd, args.repeats)
    print(f"plain PyTorch FedAvg script (digits, 20 rounds): {plain:.2f}s")
    print(f"derelayl-train algorithm=fedavg algorithm.rounds=20, MLflow on: {product:.2f}s")
    print(f"ratio {product / plain:.2f}")


if __name__ == "__main__":
    main()
