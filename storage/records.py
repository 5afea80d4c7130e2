"""Binary point record: what `points` stores per label.

Layout (little-endian header, then payload):
`u32 owner tenant_no | u16 id length | u32 dim | id (UTF-8) | vector (f32 LE) | attributes JSON`.
The vector bytes are the exact float32 values the client sent, so reads and restarts return them
bit for bit.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

_HEADER = struct.Struct("<IHI")
_F32 = np.dtype("<f4")


@dataclass(frozen=True, slots=True)
class PointRecord:
    owner: int
    point_id: str
    vector: np.ndarray
    attributes_json: bytes


def encode_point(owner: int, point_id: str, vector: np.ndarray, attributes_json: bytes) -> bytes:
    id_bytes = point_id.encode()
    vector_bytes = np.ascontiguousarray(vector, dtype=_F32).tobytes()
    header = _HEADER.pack(owner, len(id_bytes), len(vector_bytes) // 4)
    return b"".join((header, id_bytes, vector_bytes, attributes_json))


def decode_point(value: bytes) -> PointRecord:
    owner, id_len, dim = _HEADER.unpack_from(value)
    start = _HEADER.size
    point_id = value[start : start + id_len].decode()
    start += id_len
    vector = np.frombuffer(value, dtype=_F32, count=dim, offset=start)
    attributes_json = value[start + 4 * dim :]
    return PointRecord(owner, point_id, vector, attributes_json)
