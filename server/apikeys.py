"""Tenant API keys: created by the admin, scoped to (collection, tenant, role), stored hashed.

A key is `shoal_<key_id>_<secret>`: `key_id` (16 hex digits) names the record, `secret` (64 hex
digits, 256 random bits) is shown once, at creation. The `keys` column family stores, per
`key_id`, the scope, the role, the expiry and the SHA-256 of the whole key, never the key.
A plain SHA-256 is enough here, unlike for passwords: a 256-bit random secret cannot be
guessed from its hash, and a slow KDF would cost every request milliseconds.

Verification looks the record up by `key_id` (a dict, loaded at start) and compares digests
with `hmac.compare_digest` (constant time). Revoked keys keep their record, marked, so that
a client is told "revoked" rather than "unknown", and the list keeps the history; the message
depends on the secret being right, so it says nothing to someone who only guessed an id.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from enum import StrEnum

import orjson

from server import validation
from server.changes import Change
from server.errors import Invalid, NotFound, NotReady, Unauthorized
from storage import keys
from storage.store import Batch, Store

TOKEN_PREFIX = "shoal_"
_TOKEN = re.compile(r"shoal_([0-9a-f]{16})_([0-9a-f]{64})")

UNKNOWN_KEY = "unknown API key"
REVOKED_KEY = "API key revoked"
EXPIRED_KEY = "API key expired"


class Role(StrEnum):
    READ = "read"
    WRITE = "write"


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    collection: str
    tenant: str
    role: Role
    created_at: float
    expires_at: float | None
    secret_sha256: str  # hex digest of the whole key
    revoked_at: float | None = None
    description: str = ""

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> KeyRecord:
        data = orjson.loads(raw)
        return cls(**{**data, "role": Role(data["role"])})


class KeyStore:
    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._store: Store | None = None
        self._records: dict[str, KeyRecord] = {}
        self._lock = threading.Lock()  # create/revoke; readers see whole dict values

    def load(self, store: Store) -> None:
        """Read every key record; again, on a read worker, after the writer changed one."""
        self._store = store
        records = {}
        for _, value in store.scan(keys.CF_KEYS):
            record = KeyRecord.from_json(value)
            records[record.key_id] = record
        self._records = records  # one swap: a request sees the old set or the new one

    def create(
        self,
        collection: str,
        tenant: str,
        role: Role,
        expires_at: float | None = None,
        description: str = "",
    ) -> tuple[KeyRecord, str]:
        """A new key; returns its record and the key itself (never stored, shown once)."""
        validation.identifier(tenant, "tenant", "a tenant name")
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise Invalid("expires_at", "must be in the future (Unix seconds)")
        key_id = secrets.token_hex(8)
        token = f"{TOKEN_PREFIX}{key_id}_{secrets.token_hex(32)}"
        record = KeyRecord(
            key_id=key_id,
            collection=collection,
            tenant=tenant,
            role=role,
            created_at=now,
            expires_at=expires_at,
            secret_sha256=digest(token).hex(),
            description=description,
        )
        self._write(record)
        return record, token

    def revoke(self, key_id: str) -> KeyRecord:
        with self._lock:
            record = self._records.get(key_id)
            if record is None or record.revoked_at is not None:
                raise NotFound(f"API key {key_id!r} not found")
            revoked = replace(record, revoked_at=self._clock())
            self._write_locked(revoked)
        return revoked

    def revoke_collection(self, collection: str) -> list[str]:
        """Revoke every live key of a dropped collection (a new one of that name is another
        collection); returns their ids."""
        with self._lock:
            now = self._clock()
            live = [
                replace(r, revoked_at=now)
                for r in self._records.values()
                if r.collection == collection and r.revoked_at is None
            ]
            for record in live:
                self._write_locked(record)
        return [r.key_id for r in live]

    def list(self) -> list[KeyRecord]:
        return sorted(self._records.values(), key=lambda r: (r.created_at, r.key_id))

    def verify(self, token: str, token_digest: bytes) -> KeyRecord:
        """The record of a valid key; `Unauthorized` for anything else."""
        if self._store is None:
            raise NotReady("the server is still recovering; retry shortly")
        match = _TOKEN.fullmatch(token)
        record = self._records.get(match.group(1)) if match else None
        expected = bytes.fromhex(record.secret_sha256) if record else b"\0" * 32
        # Compared even when no record matched, so the time taken does not tell them apart.
        if not hmac.compare_digest(expected, token_digest) or record is None:
            raise Unauthorized(UNKNOWN_KEY)
        if record.revoked_at is not None:
            raise Unauthorized(REVOKED_KEY)
        if record.expires_at is not None and record.expires_at <= self._clock():
            raise Unauthorized(EXPIRED_KEY)
        return record

    def _write(self, record: KeyRecord) -> None:
        with self._lock:
            self._write_locked(record)

    def _write_locked(self, record: KeyRecord) -> None:
        if self._store is None:
            raise RuntimeError("the key store is not loaded")
        batch = Batch(change=Change("keys").encode())
        batch.put(keys.CF_KEYS, keys.api_key_key(record.key_id), record.to_json())
        self._store.write(batch)  # durable before the key is handed out or refused
        self._records[record.key_id] = record
