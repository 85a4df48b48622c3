"""Ledger hashing and tamper detection."""

import copy
import itertools

from derelayl.protocol.ledger import (
    GENESIS_HASH,
    Ledger,
    block_hash,
    canonical_json,
    sha256_hex,
    verify_chain,
)


def chain(n=6):
    ledger = Ledger()
    blocks = []
    for r in range(n):
        ledger.append(r, "deposit", 3, {"deposits": [[1, 0.5, 0, 0.001]], "fee": 0.002})
        ledger.append(
            r,
            "settlement",
            4,
            {"credits": {"1": 0.5}, "fee": 0.001, "royalties_minted": 1.0, "forfeited": 0.0},
        )
        blocks += ledger.take()
    return ledger, blocks


def test_canonical_serialization_is_order_independent():
    assert (
        canonical_json({"b": 1, "a": [1, 2.5]})
        == canonical_json({"a": [1, 2.5], "b": 1})
        == '{"a":[1,2.5],"b":1}'
    )


def test_block_hash_is_sha256_of_canonical_body_and_links_to_previous():
    ledger, blocks = chain(2)
    first = blocks[0]
    body = {k: v for k, v in first.items() if k != "hash"}
    assert first["hash"] == sha256_hex(canonical_json(body)) == block_hash(first)
    assert first["prev_hash"] == GENESIS_HASH
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(blocks))
    assert ledger.head == blocks[-1]["hash"] and ledger.length == len(blocks)


def test_intact_chain_verifies():
    _, blocks = chain()
    assert verify_chain(blocks).ok


def test_any_change_is_detected_at_the_right_block():
    _, blocks = chain()
    altered = copy.deepcopy(blocks)
    altered[5]["payload"]["credits"]["1"] = 5.0
    v = verify_chain(altered)
    assert not v.ok and v.bad_index == 5 and "altered" in v.reason

    rehashed = copy.deepcopy(altered)  # a forger who also recomputes the hash breaks the link
    rehashed[5]["hash"] = block_hash(rehashed[5])
    v = verify_chain(rehashed)
    assert not v.ok and v.bad_index == 6 and "prev_hash" in v.reason

    v = verify_chain(blocks[:3] + blocks[4:])
    assert not v.ok and v.bad_index == 3

    swapped = copy.deepcopy(blocks)
    swapped[2]["writer"] = 99
    assert verify_chain(swapped).bad_index == 2


def test_resumed_ledger_continues_the_chain():
    ledger, blocks = chain(3)
    resumed = Ledger(ledger.head, ledger.length)
    resumed.append(3, "deposit", 1, {"deposits": [], "fee": 0.0})
    assert verify_chain(blocks + resumed.take()).ok
