"""``derelayl-ledger``: verify and summarise the ledger of a DeRelayL run directory.

    derelayl-ledger verify RUN_DIR   # OK and what was checked, or "BAD ...: why" (exit 1)
    derelayl-ledger show RUN_DIR     # a readable summary of the chain and the economy

``verify`` checks the chain, replays the books against every file the run reports, re-hashes the
stored models, and compares the chain's head after every round with its anchor in the MLflow
run(s) the folder was tracked in (see ``derelayl.io.audit`` for what it does and does not
prove). Nothing in the folder is unpickled or executed. Bad input (not a run folder, an unknown
command) is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import NoReturn

PROG = "derelayl-ledger"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line (argparse prints the usage first)
        print(f"{PROG}: error: {message} (see {PROG} --help)", file=sys.stderr)
        raise SystemExit(2)


def verify(
    run_dir: Path,
    run_ids: list[str] | None = None,
    tracking_uri: str | None = None,
    use_anchor: bool = True,
    require_anchor: bool = False,
) -> tuple[bool, str]:
    """(ok, message): "OK: ..." listing what was checked, or "BAD ...: why"."""
    from derelayl.io.audit import Audit, Tampered

    audit = Audit(Path(run_dir), run_ids=run_ids, tracking_uri=tracking_uri, use_anchor=use_anchor)
    try:
        audit.run()
    except Tampered as err:  # "BAD block i: why" (the README's form), or "BAD: why"
        return False, f"BAD {err}" if str(err).startswith("block ") else f"BAD: {err}"
    if require_anchor and not audit.anchored:
        return False, "BAD: no anchor could be checked (" + "; ".join(
            n for n in audit.notes if "anchor" in n or "MLflow" in n
        ) + ")"
    anchor = "checked against its anchor in MLflow" if audit.anchored else "NOT anchored"
    lines = [
        f"OK: {len(audit.blocks)} blocks, chain intact, {anchor}",
        "  checked: " + ", ".join(audit.checked),
    ]
    lines += [f"  note: {n}" for n in audit.notes]
    return True, "\n".join(lines)


def show(run_dir: Path) -> str:
    import numpy as np

    from derelayl.io.audit import NotARun, Tampered, _read_yaml, read_blocks
    from derelayl.io.checkpoint import CHECKPOINT_FILE, CheckpointError
    from derelayl.io.ledger_files import LEDGER_FILE, read_checkpoint

    if not (run_dir / LEDGER_FILE).is_file():
        raise NotARun(
            f"no {LEDGER_FILE} in {run_dir} (not a DeRelayL run directory, or "
            f"derelayl.ledger=false)"
        )
    try:
        blocks = read_blocks(run_dir / LEDGER_FILE)
        kinds = Counter(str(b.get("kind")) for b in blocks)
        rounds = sorted({b["round"] for b in blocks if isinstance(b.get("round"), int)})
        models = sum(len(b["payload"]["models"]) for b in blocks if b.get("kind") == "commitment")
        winners = sum(len(b["payload"]["winners"]) for b in blocks if b.get("kind") == "settlement")
    except Tampered as err:
        raise NotARun(f"{LEDGER_FILE} cannot be summarised: {err}") from None
    except (KeyError, TypeError, AttributeError):
        raise NotARun(
            f"{LEDGER_FILE} cannot be summarised: a block is malformed (run "
            f"`{PROG} verify {run_dir}`)"
        ) from None
    lines = [
        f"ledger of {run_dir}",
        f"  blocks: {len(blocks)} ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})",
        f"  rounds: {len(rounds)} ({rounds[0]}..{rounds[-1]})" if rounds else "  rounds: 0",
        f"  models committed: {models}, winners: {winners}",
        f"  head: {blocks[-1].get('hash') if blocks else '-'}",
    ]
    path = run_dir / CHECKPOINT_FILE
    if path.is_file():
        try:
            config = _read_yaml(run_dir / "config.yaml") or {}
            n = int(config["num_participants"])
            churn = config.get("churn") or {}
            if churn.get("enabled"):
                n = int(round(n * float(churn.get("pool_factor", 1.0))))
            s = read_checkpoint(path, n)["state"]
        except (CheckpointError, Tampered, KeyError, TypeError, ValueError) as err:
            raise NotARun(
                f"{CHECKPOINT_FILE} cannot be summarised: "
                f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
            ) from None
        order = np.argsort(-s.coins)[:5]
        lines += [
            f"  coins: {s.coins.sum():.3f} held = {s.minted:.3f} minted - "
            f"{s.burned:.3f} burned (forfeited deposits)",
            "  richest: " + ", ".join(f"#{i} {s.coins[i]:.3f}" for i in order),
            f"  model owners next round: {len(s.owners)}",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = _Parser(prog=PROG, description="Verify or summarise a DeRelayL ledger.")
    ap.add_argument("command", choices=["verify", "show"])
    ap.add_argument("run_dir", type=Path, help="the run's output directory")
    ap.add_argument(
        "--run-id",
        action="append",
        default=None,
        help="verify: check against this MLflow run's anchor (repeatable) instead of "
        "the runs the folder names",
    )
    ap.add_argument(
        "--tracking-uri",
        default=None,
        help="verify: the MLflow store of the anchor (default: the run's tracking.uri)",
    )
    ap.add_argument(
        "--no-anchor",
        action="store_true",
        help="verify: skip the anchor (check the folder's own consistency only)",
    )
    ap.add_argument(
        "--require-anchor",
        action="store_true",
        help="verify: BAD unless an anchor in MLflow could be checked",
    )
    args = ap.parse_args(argv)
    if args.tracking_uri is not None:
        from derelayl.app.schema import TrackingUri
        from derelayl.sim.errors import ConfigError

        try:
            TrackingUri().check("--tracking-uri", args.tracking_uri)
        except ConfigError as err:
            ap.error(str(err))
    import re

    for run_id in args.run_id or []:
        if not re.fullmatch(r"[0-9a-f]{32}", run_id):
            ap.error(f"--run-id {run_id!r} is not an MLflow run id (32 hex digits)")
    if not args.run_dir.is_dir():
        print(f"{PROG}: error: {args.run_dir} is not a directory", file=sys.stderr)
        raise SystemExit(2)
    from derelayl.io.audit import NotARun  # numpy, the audit: after the arguments are checked

    try:
        if args.command == "show":
            print(show(args.run_dir))
            return
        ok, message = verify(
            args.run_dir,
            args.run_id,
            args.tracking_uri,
            use_anchor=not args.no_anchor,
            require_anchor=args.require_anchor,
        )
        if ok:
            message += "\n" + show(args.run_dir)
    except NotARun as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(message)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
