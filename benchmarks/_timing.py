"""Shared by the benchmarks: time the plain-PyTorch reference and the product, interleaved."""

from __future__ import annotations

import argparse

import torch


def common_args(description: str, rounds: int) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    return ap


def best_of(repeats: int, plain, product, *args):
    """Best time of each over interleaved repeats, and both final nets (of the last repeat)."""
    best_p = best_q = float("inf")
    for _ in range(repeats):
        tq, net_q = plain(*args)
        tp, net_p = product(*args)
        best_p, best_q = min(best_p, tp), min(best_q, tq)
    same = all(torch.equal(a, b) for a, b in zip(net_p.parameters(), net_q.parameters()))
    return best_p, best_q, net_p, net_q, same
