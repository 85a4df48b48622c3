"""``derelayl-ledger``: verify and summarise the ledger of a DeRelayL run directory.

    derelayl-ledger verify RUN_DIR   # OK, or the first bad block and why (exit 1)
    derelayl-ledger show RUN_DIR     # a readable summary of the chain and the economy
"""

from __future__ import annotations

import argparse
import pickle
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from derelayl.core.economy import balances_from_ledger
from derelayl.core.ledger import Verdict, verify_chain
from derelayl.tracking.economy_files import (CHECKPOINT_FILE, LEDGER_FILE, MODELS_DIR,
                                             read_ledger)

PROG = "derelayl-ledger"


def _load(run_dir: Path):
    ledger_path = run_dir / LEDGER_FILE
    if not ledger_path.exists():
        raise SystemExit(f"{PROG}: error: no {LEDGER_FILE} in {run_dir} (not a DeRelayL run "
                         f"directory, or derelayl.ledger=false)")
    try:
        blocks = read_ledger(ledger_path)
    except ValueError as err:
        return None, None, Verdict(False, 0, None, f"{LEDGER_FILE} is not valid JSONL ({err})")
    ckpt = None
    if (run_dir / CHECKPOINT_FILE).exists():
        with open(run_dir / CHECKPOINT_FILE, "rb") as fh:
            ckpt = pickle.load(fh)
    return blocks, ckpt, None


def verify(run_dir: Path) -> tuple[bool, str]:
    from derelayl.core.performance import state_hash
    import torch

    blocks, ckpt, early = _load(run_dir)
    if early is not None:
        return False, f"BAD: {early.reason}"
    verdict = verify_chain(blocks)
    if not verdict.ok:
        return False, f"BAD block {verdict.bad_index}: {verdict.reason}"
    if ckpt is not None:
        state = ckpt["state"]
        settled = {b["round"] for b in blocks if b["kind"] == "settlement"}
        if ckpt["ledger"] is not None and ckpt["ledger"][0] != (blocks[-1]["hash"] if blocks else None):
            last_ok = max(settled, default=-1)
            if last_ok + 1 != state.round:
                return False, (f"BAD: the checkpoint (round {state.round}) does not match the "
                               f"ledger's head (last settled round {last_ok})")
        coins, minted, burned = balances_from_ledger(
            [b for b in blocks if b["round"] < state.round], len(state.coins))
        worst = int(np.argmax(np.abs(coins - state.coins)))
        if not np.allclose(coins, state.coins, rtol=1e-9, atol=1e-6):
            return False, (f"BAD: balances replayed from the ledger differ from the run's "
                           f"(participant {worst}: ledger {coins[worst]!r}, run "
                           f"{state.coins[worst]!r})")
        if not (np.isclose(minted, state.minted, rtol=1e-9, atol=1e-6)
                and np.isclose(burned, state.burned, rtol=1e-9, atol=1e-6)):
            return False, "BAD: minted/burned totals in the ledger differ from the run's"
        live = ckpt["perf"].get("live_keys")
        if live is not None:
            for key in live:
                path = run_dir / MODELS_DIR / f"{key}.pt"
                if not path.exists():
                    return False, f"BAD: model {key[:16]}... is missing from {MODELS_DIR}/"
                if state_hash(torch.load(path, weights_only=True)) != key:
                    return False, f"BAD: model {key[:16]}... does not match its hash (altered)"
    return True, f"OK: {len(blocks)} blocks, chain intact" + (
        "; balances, supply and stored models match" if ckpt is not None else "")


def show(run_dir: Path) -> str:
    blocks, ckpt, early = _load(run_dir)
    if early is not None:
        return f"{PROG}: {early.reason}"
    kinds = Counter(b["kind"] for b in blocks)
    rounds = sorted({b["round"] for b in blocks})
    models = sum(len(b["payload"]["models"]) for b in blocks if b["kind"] == "commitment")
    winners = sum(len(b["payload"]["winners"]) for b in blocks if b["kind"] == "settlement")
    lines = [f"ledger of {run_dir}",
             f"  blocks: {len(blocks)} ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})",
             f"  rounds: {len(rounds)} ({rounds[0]}..{rounds[-1]})" if rounds else "  rounds: 0",
             f"  models committed: {models}, winners: {winners}",
             f"  head: {blocks[-1]['hash'] if blocks else '-'}"]
    if ckpt is not None:
        s = ckpt["state"]
        order = np.argsort(-s.coins)[:5]
        lines += [f"  coins: {s.coins.sum():.3f} held = {s.minted:.3f} minted - "
                  f"{s.burned:.3f} burned (forfeited deposits)",
                  "  richest: " + ", ".join(f"#{i} {s.coins[i]:.3f}" for i in order),
                  f"  model owners next round: {len(s.owners)}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog=PROG, description="Verify or summarise a DeRelayL ledger.")
    ap.add_argument("command", choices=["verify", "show"])
    ap.add_argument("run_dir", type=Path, help="the run's output directory")
    args = ap.parse_args(argv)
    if not args.run_dir.is_dir():
        print(f"{PROG}: error: {args.run_dir} is not a directory", file=sys.stderr)
        raise SystemExit(2)
    if args.command == "show":
        print(show(args.run_dir))
        return
    ok, message = verify(args.run_dir)
    print(message)
    if ok:
        print(show(args.run_dir))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
