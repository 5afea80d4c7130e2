"""Key encoding for every column family.

Integers are fixed-width big-endian so that RocksDB's byte order is numeric order, and every
key of a collection starts with its 4-byte collection id, so one collection is one key range.

| column family | key | value |
|---|---|---|
| `meta` | `b"c" + name` | collection record (JSON) |
| `meta` | `b"n"` | next collection id (u32) |
| `meta` | `b"t" + cid + tenant_no` | tenant record (JSON) |
| `meta` | `b"r" + cid` | the collection's Curator clustering tree (`index.cluster_tree` bytes) |
| `meta` | `b"q" + cid` | the collection's quotas (JSON, totals over its tenants) |
| `meta` | `b"q" + cid + b"/" + tenant name` | a tenant's quotas (JSON), by name (may predate it) |
| `keys` | `key_id` (ASCII) | API key record (JSON: scope, role, SHA-256 of the secret, expiry) |
| `points` | `cid + label(u64)` | point record (`storage.records`) |
| `grants` | `cid + label(u64) + tenant_no(u32)` | empty: the point is readable by that tenant |
| `oplog` | `cid + seq(u64)` | labels a write changed (`encode_oplog`), replayed into HNSW graphs |
| `changes` | `seq(u64)` | what a write changed (`server.changes`); only with read workers |
"""

from __future__ import annotations

import struct

CF_META = "meta"
CF_POINTS = "points"
CF_GRANTS = "grants"
CF_KEYS = "keys"
CF_OPLOG = "oplog"
CF_CHANGES = "changes"  # only in a store whose writer has read workers (`storage.store`)
COLUMN_FAMILIES = (CF_META, CF_POINTS, CF_GRANTS, CF_KEYS, CF_OPLOG)

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_CID_LABEL = struct.Struct(">IQ")
_CID_TENANT = struct.Struct(">II")
_GRANT = struct.Struct(">IQI")

COLLECTION_PREFIX = b"c"
NEXT_COLLECTION_ID = b"n"
TENANT_PREFIX = b"t"
TREE_PREFIX = b"r"
QUOTA_PREFIX = b"q"
_QUOTA_TENANT = b"/"


def oplog_key(cid: int, seq: int) -> bytes:
    return _CID_LABEL.pack(cid, seq)


def decode_oplog_key(key: bytes) -> tuple[int, int]:
    return _CID_LABEL.unpack(key)


def encode_oplog(vector_labels: list[int], reader_labels: list[int]) -> bytes:
    """Labels whose vector changed (upserts, deletes), then labels whose readers changed
    (grants, revokes), as u32 counts and little-endian u32 arrays."""
    head = struct.pack("<II", len(vector_labels), len(reader_labels))
    return head + struct.pack(
        f"<{len(vector_labels) + len(reader_labels)}I", *vector_labels, *reader_labels
    )


def decode_oplog(value: bytes) -> tuple[list[int], list[int]]:
    vectors, readers = struct.unpack_from("<II", value)
    labels = list(struct.unpack_from(f"<{vectors + readers}I", value, 8))
    return labels[:vectors], labels[vectors:]


def change_key(seq: int) -> bytes:
    return _U64.pack(seq)


def decode_change_key(key: bytes) -> int:
    (seq,) = _U64.unpack(key)
    return seq


def u32(value: int) -> bytes:
    return _U32.pack(value)


def collection_key(name: str) -> bytes:
    return COLLECTION_PREFIX + name.encode()


def collection_name(key: bytes) -> str:
    return key[len(COLLECTION_PREFIX) :].decode()


def tenant_key(cid: int, tenant_no: int) -> bytes:
    return TENANT_PREFIX + _CID_TENANT.pack(cid, tenant_no)


def tenant_prefix(cid: int) -> bytes:
    return TENANT_PREFIX + _U32.pack(cid)


def decode_tenant_key(key: bytes) -> tuple[int, int]:
    return _CID_TENANT.unpack_from(key, len(TENANT_PREFIX))


def tree_key(cid: int) -> bytes:
    return TREE_PREFIX + _U32.pack(cid)


def quota_key(cid: int, tenant: str | None = None) -> bytes:
    """The collection's own quotas (`tenant=None`) or one tenant's."""
    key = QUOTA_PREFIX + _U32.pack(cid)
    return key if tenant is None else key + _QUOTA_TENANT + tenant.encode()


def decode_quota_key(key: bytes) -> tuple[int, str | None]:
    (cid,) = _U32.unpack_from(key, len(QUOTA_PREFIX))
    rest = key[len(QUOTA_PREFIX) + _U32.size :]
    return cid, (rest[len(_QUOTA_TENANT) :].decode() if rest else None)


def quota_range(cid: int) -> tuple[bytes, bytes]:
    """[lo, hi) covering every quota key of one collection."""
    return quota_key(cid), quota_key(cid + 1)


def api_key_key(key_id: str) -> bytes:
    return key_id.encode("ascii")


def point_key(cid: int, label: int) -> bytes:
    return _CID_LABEL.pack(cid, label)


def decode_point_key(key: bytes) -> tuple[int, int]:
    return _CID_LABEL.unpack(key)


def grant_key(cid: int, label: int, tenant_no: int) -> bytes:
    return _GRANT.pack(cid, label, tenant_no)


def decode_grant_key(key: bytes) -> tuple[int, int, int]:
    return _GRANT.unpack(key)


def collection_range(cid: int) -> tuple[bytes, bytes]:
    """[lo, hi) covering every `points`/`grants` key of one collection."""
    return _U32.pack(cid), _U32.pack(cid + 1)


def prefix_upper_bound(prefix: bytes) -> bytes | None:
    """Smallest key greater than every key that starts with `prefix` (None: no bound)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])
