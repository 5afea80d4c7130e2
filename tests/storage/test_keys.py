from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from storage import keys
from storage.records import decode_point, encode_point

u32s = st.integers(0, 2**32 - 1)
u64s = st.integers(0, 2**64 - 1)


@given(u32s, u64s)
def test_point_key_round_trips(cid: int, label: int) -> None:
    assert keys.decode_point_key(keys.point_key(cid, label)) == (cid, label)


@given(u32s, u64s, u32s)
def test_grant_key_round_trips(cid: int, label: int, tenant: int) -> None:
    assert keys.decode_grant_key(keys.grant_key(cid, label, tenant)) == (cid, label, tenant)


@given(u32s, u32s)
def test_tenant_key_round_trips(cid: int, tenant: int) -> None:
    assert keys.decode_tenant_key(keys.tenant_key(cid, tenant)) == (cid, tenant)


@given(st.lists(st.tuples(st.integers(0, 2**32 - 2), u64s), min_size=2, max_size=50))
def test_byte_order_is_numeric_order(pairs: list[tuple[int, int]]) -> None:
    encoded = sorted(keys.point_key(cid, label) for cid, label in pairs)
    assert [keys.decode_point_key(k) for k in encoded] == sorted(pairs)


@given(st.integers(0, 2**32 - 2), u64s)
def test_collection_range_covers_its_keys_only(cid: int, label: int) -> None:
    lo, hi = keys.collection_range(cid)
    assert lo <= keys.point_key(cid, label) < hi
    assert lo <= keys.grant_key(cid, label, 7) < hi
    assert not lo <= keys.point_key(cid + 1, 0) < hi


def test_prefix_upper_bound() -> None:
    assert keys.prefix_upper_bound(b"t\x00\x01") == b"t\x00\x02"
    assert keys.prefix_upper_bound(b"a\xff\xff") == b"b"
    assert keys.prefix_upper_bound(b"\xff") is None


@given(
    u32s,
    st.text(min_size=1, max_size=64),
    st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=32),
    st.binary(max_size=64),
)
def test_point_record_round_trips_bit_for_bit(
    owner: int, point_id: str, values: list[float], attributes: bytes
) -> None:
    vector = np.asarray(values, dtype=np.float32)
    record = decode_point(encode_point(owner, point_id, vector, attributes))
    assert record.owner == owner
    assert record.point_id == point_id
    assert record.vector.tobytes() == vector.tobytes()
    assert record.attributes_json == attributes


@given(st.integers(0, 2**32 - 2), st.one_of(st.none(), st.text(min_size=1, max_size=64)))
def test_quota_key_round_trips_and_stays_in_its_collection_range(
    cid: int, tenant: str | None
) -> None:
    key = keys.quota_key(cid, tenant)
    assert keys.decode_quota_key(key) == (cid, tenant)
    lo, hi = keys.quota_range(cid)
    assert lo <= key < hi
    assert not lo <= keys.quota_key(cid + 1, tenant) < hi
