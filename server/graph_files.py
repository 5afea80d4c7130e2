"""Graph snapshot files: `<data dir>/graphs/c<cid>/<shared|t<tenant>>.graph`.

Layout: magic, a little-endian u32 header length, a JSON header (`seq`, payload and pending
sizes, CRC-32 of both), the pickled graph, the serialized pending bitmap. Written to a
temporary file, synced, renamed over the old one, and the directory synced: a crash leaves the
old snapshot or the new one, never a torn file. A file that fails any check loads as None and
the graph is rebuilt.
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from pathlib import Path

import orjson
from pyroaring import BitMap

_MAGIC = b"SHOALHNSW1"
_LENGTH = struct.Struct("<I")


def save(path: Path, seq: int, payload: bytes, pending: BitMap) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pending_bytes = pending.serialize()
    header = orjson.dumps(
        {
            "seq": seq,
            "payload_bytes": len(payload),
            "pending_bytes": len(pending_bytes),
            "crc32": zlib.crc32(pending_bytes, zlib.crc32(payload)),
        }
    )
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as out:
        out.write(_MAGIC + _LENGTH.pack(len(header)) + header)
        out.write(payload)
        out.write(pending_bytes)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    _sync_directory(path.parent)


def load(path: Path) -> tuple[int, bytes, BitMap] | None:
    try:
        raw = path.read_bytes()
        if not raw.startswith(_MAGIC):
            return None
        (length,) = _LENGTH.unpack_from(raw, len(_MAGIC))
        start = len(_MAGIC) + _LENGTH.size
        header = orjson.loads(raw[start : start + length])
        body = start + length
        payload = raw[body : body + header["payload_bytes"]]
        pending_bytes = raw[body + header["payload_bytes"] :]
        if len(pending_bytes) != header["pending_bytes"]:
            return None
        if zlib.crc32(pending_bytes, zlib.crc32(payload)) != header["crc32"]:
            return None
        return int(header["seq"]), payload, BitMap.deserialize(pending_bytes)
    except (OSError, ValueError, KeyError, struct.error):
        return None


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def remove_directory(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def _sync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
