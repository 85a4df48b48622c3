"""Ledger hashing and tamper detection."""

import copy
import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def stdlib_canonical(obj):
    """The definition canonical_json must keep (the ledger hashes of every run ever written)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


EDGE_FLOATS = [
    0.0,
    -0.0,
    1e-4,
    9.99e-5,
    1e-5,
    -1e-5,
    1.5e-7,
    5e-324,
    1e15,
    1e16,
    -1e16,
    1e22,
    1.7976931348623157e308,
    0.1,
    0.10400000000000001,
    283.00075,
    2.0**53 + 2.0,
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(EDGE_FLOATS),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner, max_size=6)
    ),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_canonical_json_is_the_standard_librarys_text(obj):
    # orjson writes it where it cannot differ; whatever it writes must be this very text
    assert canonical_json(obj) == stdlib_canonical(obj)


def test_canonical_json_of_edge_numbers_and_what_orjson_writes_differently():
    for x in EDGE_FLOATS:
        assert canonical_json({"v": [x, {"w": x}]}) == stdlib_canonical({"v": [x, {"w": x}]})
    rng = np.random.default_rng(0)
    coins = (rng.standard_normal(5000) * 10.0 ** rng.integers(-9, 19, 5000)).tolist()
    assert canonical_json({"c": coins}) == stdlib_canonical({"c": coins})
    odd = {"é": "ü", "q": 'a"b\n', "n": np.float64(0.5), "big": 2**80, "none": None}
    assert canonical_json(odd) == stdlib_canonical(odd)
    assert canonical_json({3: 1, 10: 2}) == stdlib_canonical({3: 1, 10: 2}) == '{"3":1,"10":2}'
    for bad in (math.nan, math.inf, -math.inf):  # refused, as the standard library refuses them
        with pytest.raises(ValueError):
            canonical_json({"x": bad})


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
