"""Vectors parsed straight from JSON bytes (api/json_vectors.py) are exactly orjson's.

The lean lane trusts these values in place of orjson's, so every double the kernel returns
is compared bit for bit with Python's own parse of the same text, over hundreds of thousands
of numbers in the forms clients write (shortest reprs of doubles, of float32 and float16
values, fixed and exponent notation, integers, signed zeros); what the kernel does not
settle must be the rare kind and must send the body to the ordinary parse. Then the body's
structure: only `vector` keys at the model's depth are taken, and anything ambiguous (escaped
keys, duplicate keys, vectors outside `points`, malformed numbers) is left to orjson.
"""

from __future__ import annotations

import random
import struct

import numpy as np
import orjson
import pytest

from api import json_vectors

FORMS = ("double", "float32", "float16", "fixed", "exponent", "integer", "special")
SPECIAL = [
    "0", "-0", "0.0", "-0.0", "0e10", "-0e-3", "1e5", "1E-5", "1e+5", "0.1", "0.000001",
    "0.30000000000000004", "1.7976931348623157e308", "2.2250738585072014e-308",
    "123456789012345", "-999999999999999", "3.4028234663852886e38", "1e-45",
]  # fmt: skip


def token(rng: random.Random, form: str) -> str:
    if form == "double":
        bits = rng.getrandbits(63) | (rng.getrandbits(1) << 63)
        value = struct.unpack("<d", struct.pack("<Q", bits))[0]
        return repr(value) if np.isfinite(value) else "1.5"
    if form == "float32":
        return repr(float(np.float32(rng.gauss(0, 0.05))))
    if form == "float16":
        return repr(float(np.float16(rng.gauss(0, 0.1))))
    if form == "fixed":
        return f"{rng.uniform(-1000, 1000):.{rng.randrange(0, 13)}f}"
    if form == "exponent":
        value = rng.uniform(-10, 10) * 10.0 ** rng.randrange(-300, 300)
        return f"{value:.{rng.randrange(0, 17)}e}"
    if form == "integer":
        return str(rng.randrange(-(10**15), 10**15))
    return rng.choice(SPECIAL)


def parse_one(text: str) -> float | None:
    """The kernel's double for one number (as a vector of one), or None if it defers."""
    body = ('{"points":[{"vector":[' + text + "]}]}").encode()
    extracted = json_vectors.extract(body, 3)
    if extracted is None:
        return None
    [vector] = extracted.vectors
    return float(vector[0])


def bits(value: float) -> bytes:
    return struct.pack("<d", value)


@pytest.mark.parametrize("form", FORMS)
def test_every_settled_number_is_the_double_orjson_gives(form: str) -> None:
    rng = random.Random(f"numbers-{form}")
    texts = [token(rng, form) for _ in range(20_000)]
    body = ('{"points":[{"vector":[' + ",".join(texts) + "]}]}").encode()
    deferred = []
    whole = json_vectors.extract(body, 3)
    for i, text in enumerate(texts):
        value = parse_one(text)
        expected = orjson.loads(f"[{text}]")[0]
        if value is None:
            deferred.append(text)
            continue
        assert bits(value) == bits(float(expected)), text
        if whole is not None:
            assert bits(float(whole.vectors[0][i])) == bits(float(expected)), text
    # Only numbers below the normal doubles defer (random bit patterns hold a few); what
    # clients send (float32 and float16 values, fixed notation, integers) never does.
    assert all(abs(float(orjson.loads(t))) < 2.2250738585072014e-308 for t in deferred)
    if form in ("float32", "float16", "fixed", "integer"):
        assert deferred == [] and whole is not None


def test_what_the_kernel_leaves_to_orjson() -> None:
    # Subnormals, overflow, large ints, and more significant digits than a uint64 holds.
    for text in [
        "5e-324", "1e-400", "1e400", "-1e400",
        "1234567890123456", "123456789012345678901", "0.12345678901234567890123",
    ]:  # fmt: skip
        assert parse_one(text) is None, text
    # Exactly halfway between two doubles: to the even one, as Python rounds.
    for text in ["9007199254740993.0", "9007199254740995.0", "-1.8014398509481985e16"]:
        assert parse_one(text) == float(text), text
    # Leading zeros are skipped when counting significant digits.
    assert parse_one("0.000000000000000000001234") == 1.234e-21
    negative_int_zero, negative_zero = parse_one("-0"), parse_one("-0.0")
    assert negative_int_zero is not None and bits(negative_int_zero) == bits(0.0)  # an int
    assert negative_zero is not None and bits(negative_zero) == bits(-0.0)


@pytest.mark.parametrize(
    "text",
    ["01", "1.", ".5", "+1", "1e", "1e+", "-", "--1", "NaN", "Infinity", "0x10", "1_0", '"1"',
     "true", "null", "[1]", "{}", "1 2", "1,", ",1"],
)  # fmt: skip
def test_anything_outside_the_json_number_grammar_is_left_to_orjson(text: str) -> None:
    assert parse_one(text) is None
    assert parse_one(f"0.5, {text}") is None


def test_only_the_vectors_of_points_are_taken() -> None:
    body = {
        "points": [
            {"id": "a", "vector": [0.5, -1.25], "attributes": {"vector": [9.0, 9.0]}},
            {"id": "b", "vector": [3, 4e-1], "shared_with": ["x"]},
        ]
    }
    parsed = json_vectors.loads(orjson.dumps(body), "points")
    assert parsed is not None
    a, b = parsed["points"]
    assert type(a["vector"]) is json_vectors.ParsedVector and a["vector"].tolist() == [0.5, -1.25]
    assert a["attributes"] == {"vector": [9.0, 9.0]}  # deeper: an attribute, untouched
    assert b["vector"].tolist() == [3.0, 0.4] and b["shared_with"] == ["x"]
    pretty = orjson.dumps(body, option=orjson.OPT_INDENT_2).replace(b",", b" ,\n ")
    again = json_vectors.loads(pretty, "points")
    assert again is not None and again["points"][1]["vector"].tolist() == [3.0, 0.4]


@pytest.mark.parametrize(
    "raw",
    [
        # A key spelt with an escape is `vector` to orjson: not vouched for.
        b'{"points":[{"vec\\u0074or":[1.0,2.0]}]}',
        # Two `vector` keys: orjson keeps the last, two were parsed.
        b'{"points":[{"vector":[1.0,2.0],"vector":[3.0,4.0]}]}',
        # At the depth of points but under another key, or the points not a list.
        b'{"points":[{"vector":[1.0]}],"other":[{"vector":[2.0]}]}',
        b'{"points":{"a":{"vector":[1.0]}}}',
        # Empty, nested, or holding something else than numbers: the model's message.
        b'{"points":[{"vector":[]}]}',
        b'{"points":[{"vector":[[1.0],[2.0]]}]}',
        b'{"points":[{"vector":[1.0,"2"]}]}',
        b'{"points":[{"vector":[1.0,true]}]}',
        b'{"points":[{"vector":[1.0,2.0,]}]}',
        # Malformed around the vectors: orjson's own 400.
        b'{"points":[{"vector":[1.0,2.0]}]',
        b'{"points":[{"vector":[1.0,2.0',
        b'{"points":[{"id":"a\\"","vector":[1.0]}]} trailing',
    ],
)
def test_an_ambiguous_body_takes_the_ordinary_parse(raw: bytes) -> None:
    assert json_vectors.loads(raw, "points") is None


def test_a_vector_key_inside_a_string_is_text() -> None:
    raw = b'{"points":[{"id":"\\"vector\\":[1.0]","vector":[2.0, 3.0]}]}'
    parsed = json_vectors.loads(raw, "points")
    assert parsed is not None
    [point] = parsed["points"]
    assert point["id"] == '"vector":[1.0]' and point["vector"].tolist() == [2.0, 3.0]


def test_a_query_and_a_batch_take_theirs() -> None:
    query = b'{"k": 3, "vector": [0.5, 2], "filter": {"vector": [1.0]}}'
    parsed = json_vectors.loads(query, None)
    assert parsed is not None and parsed["vector"].tolist() == [0.5, 2.0]
    assert parsed["filter"] == {"vector": [1.0]} and parsed["k"] == 3  # deeper: untouched
    batch = b'{"queries": [{"vector": [1.5]}, {"k": 1, "vector": [2.5, 3]}]}'
    parsed = json_vectors.loads(batch, "queries")
    assert parsed is not None
    assert [q["vector"].tolist() for q in parsed["queries"]] == [[1.5], [2.5, 3.0]]
    for ambiguous in [
        b'{"vector": [1.0], "vector": [2.0]}',
        b'{"vec\\u0074or": [1.0]}',
        b'{"vector": []}',
        b'[{"vector": [1.0]}]',
    ]:
        assert json_vectors.loads(ambiguous, None) is None, ambiguous


def test_short_numbers_and_many_vectors_fit() -> None:
    """Scratch space grows past its first guess (numbers of 8 bytes, 16 vectors)."""
    points = [{"id": str(i), "vector": [i % 10, 0, 1] * 700} for i in range(40)]
    parsed = json_vectors.loads(orjson.dumps({"points": points}), "points")
    assert parsed is not None
    for i, point in enumerate(parsed["points"]):
        assert point["vector"].tolist() == [float(i % 10), 0.0, 1.0] * 700


def test_the_start_up_warm_up_compiles_what_requests_use() -> None:
    """`warm_up` runs during recovery (api/app.py): requests must find that version of the
    kernel and compile no other (a stall of seconds on an empty numba cache)."""
    json_vectors.warm_up()
    compiled = len(json_vectors._extract.signatures)
    assert compiled >= 1
    json_vectors.loads(b'{"vector": [0.5, 1], "k": 3}', None)
    json_vectors.loads(b'{"queries": [{"vector": [1.5]}]}', "queries")
    json_vectors.loads(b'{"points": [{"id": "a", "vector": [2.5]}]}', "points")
    assert len(json_vectors._extract.signatures) == compiled
