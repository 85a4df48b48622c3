"""The ledger's anchor outside the run folder: the chain's head after every settled round,
recorded in the MLflow run that tracks the run as it goes.

A hash chain only proves that a folder is consistent with itself: whoever can write the folder
can forge a credit and recompute every hash after it. The anchor is written where the folder's
owner cannot rewrite history unnoticed (an MLflow server the team trusts, or at least a store
other than the folder):

- metric ``ledger/head`` (step = settled round 1..R): the head hash's first 12 hex digits as an
  integer (48 bits, exact in MLflow's float64 values), with ``ledger/blocks`` (the chain length);
- tag ``derelayl.ledger_head``: ``"<round>:<full head hash>"`` after the last flushed round.

``derelayl-ledger verify`` recomputes the head after every round from the folder's ledger and
compares it with the anchor of every MLflow run the folder was tracked in
(``mlflow_runs.json``). To pass, a forgery would need a chain whose 48-bit head prefixes match
at every anchored round and whose final head matches the tag's full 256 bits.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from derelayl.protocol.ledger import GENESIS_HASH
from derelayl.protocol.runner import EconomyObserver

HEAD_METRIC = "ledger/head"
BLOCKS_METRIC = "ledger/blocks"
HEAD_TAG = "derelayl.ledger_head"
PREFIX_HEX = 12  # 48 bits: exact as a float64


def head_code(head: str) -> int:
    return int(head[:PREFIX_HEX], 16)


def heads_by_round(blocks: Iterable[dict[str, Any]], rounds: int) -> dict[int, tuple[str, int]]:
    """Settled round k (1..rounds) -> (head hash, chain length) after it, from the blocks."""
    out: dict[int, tuple[str, int]] = {}
    head, length, blocks = GENESIS_HASH, 0, list(blocks)
    i = 0
    for k in range(1, rounds + 1):
        while i < len(blocks) and blocks[i]["round"] < k:  # protocol round k-1 = settled round k
            head, length = blocks[i]["hash"], i + 1
            i += 1
        out[k] = (head, length)
    return out


class LedgerAnchor(EconomyObserver):
    """Logs the head after every settled round to the MLflow run (through its tracker)."""

    def __init__(self, tracker):
        self.tracker = tracker

    def log(self, round_: int, head: str, length: int) -> None:
        self.tracker.log_metrics(
            {HEAD_METRIC: float(head_code(head)), BLOCKS_METRIC: float(length)}, step=round_
        )
        self.tracker.set_tags({HEAD_TAG: f"{round_}:{head}"})

    def replay(self, blocks: list[dict[str, Any]], rounds: int) -> None:
        """A resumed run's new MLflow run gets the settled rounds' heads too."""
        for k, (head, length) in heads_by_round(blocks, rounds).items():
            self.log(k, head, length)

    def on_settled(self, state, perf_state, ledger, history):
        if ledger is not None:
            self.log(int(state.round), ledger.head, ledger.length)
            self.tracker.flush_due()


def read_anchor(client, run_id: str) -> tuple[dict[int, int], str | None, str]:
    """(round -> head code, the tag's "<round>:<hash>" or None, the run's status) of a run."""
    run = client.get_run(run_id)
    codes = {int(m.step): int(m.value) for m in client.get_metric_history(run_id, HEAD_METRIC)}
    return codes, run.data.tags.get(HEAD_TAG), run.info.status
