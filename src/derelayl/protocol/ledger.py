"""The hash-chained ledger: blocks, canonical serialization, verification.

A block's hash is SHA-256 over the canonical JSON (sorted keys, no whitespace, ASCII) of every
field except the hash itself, and includes the previous block's hash, so changing any byte of
any block breaks the chain from there on. ``balances_from_ledger`` replays every coin movement
the blocks record (what ``derelayl-ledger verify`` checks the run's books against). Persistence
is the edge's job (``derelayl.io.ledger_files``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

GENESIS_HASH = "0" * 64
BLOCK_KINDS = ("deposit", "commitment", "testing", "settlement")


def canonical_json(obj: Any) -> str:
    """The canonical text of ``obj``: the standard library's ``json.dumps`` with sorted keys, no
    whitespace, ASCII only and no NaN. orjson writes it ~4x faster: its text is used wherever it
    cannot differ (no number in exponent or tiny fixed form, no escape, no null, only printable
    ASCII), else the standard library writes it."""
    try:
        fast = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # what orjson does not write (a non-str key, a numpy scalar, a huge int)
        return _stdlib_json(obj)
    if _as_stdlib_writes(fast):
        return fast.decode()
    return _stdlib_json(obj)


def _stdlib_json(obj: Any) -> str:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def _as_stdlib_writes(text: bytes) -> bool:
    """Whether orjson's ``text`` is what the standard library writes. Where they may differ: a
    byte outside printable ASCII or an escape (the standard library escapes more), null (orjson's
    NaN and infinities), a number in exponent form (1e16 for 1e+16) or below 1e-4 (0.00001 for
    1e-05). Single-byte searches where they do: each longer one costs ~1 ns a byte."""
    if not text.isascii() or b"\\" in text or b"\x7f" in text:
        return False
    outside = b"".join(text.split(b'"')[::2])  # numbers, literals, punctuation (no \" in a string)
    if b"n" in outside or b"0.0000" in outside:  # null; a number below 1e-4
        return False
    # an "e" outside strings: an exponent, or true / false
    return b"e" not in outside or outside.count(b"e") == outside.count(b"true") + outside.count(
        b"false"
    )


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def block_hash(block: Mapping[str, Any]) -> str:
    return sha256_hex(canonical_json({k: v for k, v in block.items() if k != "hash"}))


class Block(dict):
    """A block (a plain dict of its fields) that remembers its canonical JSON line: encoding a
    block is most of what writing a long ledger costs, and its hash needs the same text."""

    __slots__ = ("line",)
    line: str


def make_block(
    index: int, round_: int, kind: str, writer: int, prev_hash: str, payload: Mapping[str, Any]
) -> Block:
    block = Block(
        index=int(index),
        round=int(round_),
        kind=kind,
        writer=int(writer),
        prev_hash=prev_hash,
        payload=dict(payload),
    )
    body = canonical_json(block)
    digest = sha256_hex(body)
    # "hash" sorts before every other field: the block's own line is the body with it in front
    block["hash"] = digest
    block.line = '{"hash":"' + digest + '",' + body[1:]
    return block


def block_line(block: Mapping[str, Any]) -> str:
    """A block's canonical JSON (what a ledger file holds, one per line)."""
    return getattr(block, "line", None) or canonical_json(block)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    blocks: int
    bad_index: int | None = None
    reason: str = ""


def verify_chain(blocks: Iterable[Mapping[str, Any]]) -> Verdict:
    """Check indices, links and hashes; report the first bad block and why."""
    prev, n = GENESIS_HASH, 0
    for n, block in enumerate(blocks, start=1):
        i = n - 1
        missing = {"index", "round", "kind", "writer", "prev_hash", "payload", "hash"} - set(block)
        if missing:
            return Verdict(False, n, i, f"missing fields {sorted(missing)}")
        if block["index"] != i:
            return Verdict(False, n, i, f"index is {block['index']}, expected {i}")
        if block["kind"] not in BLOCK_KINDS:
            return Verdict(False, n, i, f"unknown block kind {block['kind']!r}")
        if block["prev_hash"] != prev:
            return Verdict(False, n, i, "prev_hash does not match the previous block's hash")
        if block_hash(block) != block["hash"]:
            return Verdict(False, n, i, "content does not match its hash (block was altered)")
        prev = block["hash"]
    return Verdict(True, n)


class Ledger:
    """The chain's head and the blocks appended since the last ``take()``.

    Only the head is kept: observers persist the blocks, so a ledger of thousands of rounds costs
    no memory here. A resumed run starts from the persisted head and length.
    """

    def __init__(self, head: str = GENESIS_HASH, length: int = 0):
        self.head = head
        self.length = int(length)
        self.pending: list[dict[str, Any]] = []

    def append(self, round_: int, kind: str, writer: int, payload: Mapping[str, Any]) -> dict:
        block = make_block(self.length, round_, kind, writer, self.head, payload)
        self.pending.append(block)
        self.head, self.length = block["hash"], self.length + 1
        return block

    def take(self) -> list[dict[str, Any]]:
        out, self.pending = self.pending, []
        return out


def balances_from_ledger(blocks, num_participants: int) -> tuple[np.ndarray, float, float]:
    """Replay every coin movement recorded in the blocks: (coins, minted, burned)."""
    coins = np.zeros(num_participants)
    minted = burned = 0.0
    for block in blocks:
        pay = block["payload"]
        coins[block["writer"]] += pay["fee"]
        minted += pay["fee"]
        if block["kind"] == "deposit":
            for trainer, bid_t, owner, bid_o in pay["deposits"]:
                coins[trainer] -= bid_t
                coins[owner] -= bid_o
        elif block["kind"] == "settlement":
            for who, amount in pay["credits"].items():
                coins[int(who)] += amount
            minted += pay["royalties_minted"]
            burned += pay["forfeited"]
    return coins, minted, burned
