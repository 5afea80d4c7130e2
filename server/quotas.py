"""Quotas: per tenant and per collection, set by the admin, persisted, enforced.

- `max_points`: points a tenant owns, or a collection holds. Checked in `Collection.upsert`
  under its write mutex once it knows how many new points the batch creates
  (`check_new_points`), so it is exact under concurrency.
- `max_upsert_batch`: points in one upsert request; checked before the work starts.
- `query_rate`/`query_burst`, `write_rate`/`write_burst`: requests a second and bucket size
  (a batch query counts each of its queries); checked before the work starts (`admit`).

A tenant's quotas in force are its own overrides, field by field, over the server defaults
(`quota_*` settings); a collection's apply to the sum of its tenants (rates: one bucket for
the collection) and have no defaults. Unset means unlimited. Over a quota: `OverQuota`
(429) with a retry time, and nothing applied. Overrides are stored in `meta`
(`storage.keys.quota_key`), by tenant name so that they can be set before a tenant's first
write; they outlive a deleted tenant (policy, like its keys) and go with their collection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal

import orjson

from server import audit, validation
from server.changes import collection_changed
from server.errors import Invalid, OverQuota
from server.ratelimit import Rate, RateLimiter
from storage import keys
from storage.store import Batch

if TYPE_CHECKING:
    from server.collection import Collection
    from server.settings import Settings

RateKind = Literal["query", "write"]

# `max_points` and `max_upsert_batch` do not clear by waiting (points must be deleted, or the
# batch split): the Retry-After of their 429 is a back-off hint, not a promise.
CAPACITY_RETRY_AFTER_S = 60.0


@dataclass(frozen=True, slots=True)
class Quotas:
    max_points: int | None = None
    max_upsert_batch: int | None = None
    query_rate: float | None = None
    query_burst: int | None = None
    write_rate: float | None = None
    write_burst: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Quotas:
        return cls(**{f.name: getattr(settings, f"quota_{f.name}") for f in fields(cls)})

    def patched(self, patch: Mapping[str, Any]) -> Quotas:
        """Fields in `patch` replace ours; a None value removes the override."""
        unknown = sorted(set(patch) - {f.name for f in fields(self)})
        if unknown:
            raise Invalid(f"quotas.{unknown[0]}", "unknown quota")
        return replace(self, **patch)

    def over(self, fallback: Quotas) -> Quotas:
        """Ours where set, else `fallback`'s."""
        return Quotas(
            **{
                f.name: fallback_value if (value := getattr(self, f.name)) is None else value
                for f, fallback_value in zip(fields(self), asdict(fallback).values(), strict=True)
            }
        )

    def rate(self, kind: RateKind) -> Rate | None:
        if kind == "query":
            return Rate.of(self.query_rate, self.query_burst)
        return Rate.of(self.write_rate, self.write_burst)

    def to_dict(self) -> dict[str, int | float | None]:
        return asdict(self)

    @property
    def empty(self) -> bool:
        return all(value is None for value in asdict(self).values())


class QuotaBook:
    """Every quota override of the database, the server defaults and the rate buckets."""

    def __init__(self, defaults: Quotas, clock: Callable[[], float] = time.monotonic):
        self.defaults = defaults
        self._collections: dict[str, Quotas] = {}
        self._tenants: dict[tuple[str, str], Quotas] = {}
        self._limiter = RateLimiter(clock)
        self._lock = threading.Lock()  # serializes setters; readers see whole values
        self._queries_limited: frozenset[str] = frozenset()  # collections with a query rate

    # -- persistence ------------------------------------------------------------------

    def load(self, collections: Iterable[Collection]) -> None:
        """Read the stored overrides; again, on a read worker, after the writer changed one."""
        read: list[tuple[str, Quotas | None, dict[tuple[str, str], Quotas]]] = []
        for collection in collections:
            own: Quotas | None = None
            tenants: dict[tuple[str, str], Quotas] = {}
            prefix = keys.quota_key(collection.config.cid)
            for key, value in collection.store.scan(keys.CF_META, prefix):
                _, tenant = keys.decode_quota_key(key)
                quotas = Quotas(**orjson.loads(value))
                if tenant is None:
                    own = quotas
                else:
                    tenants[(collection.name, tenant)] = quotas
            read.append((collection.name, own, tenants))
        with self._lock:
            for name, own, tenants in read:
                self._drop_overrides(name)
                if own is not None:
                    self._collections[name] = own
                self._tenants.update(tenants)
            self._note_query_limits()

    def set_collection(self, collection: Collection, patch: Mapping[str, Any]) -> Quotas:
        """Patch the collection's quotas; returns them."""
        with self._lock:
            quotas = self._collections.get(collection.name, Quotas()).patched(patch)
            self._persist(collection, None, quotas)
            self._collections[collection.name] = quotas
            self._note_query_limits()
        audit.note(quotas=dict(patch))
        return quotas

    def set_tenant(self, collection: Collection, tenant: str, patch: Mapping[str, Any]) -> Quotas:
        """Patch the tenant's overrides; returns its quotas in force."""
        validation.identifier(tenant, "tenant", "a tenant name")
        with self._lock:
            key = (collection.name, tenant)
            quotas = self._tenants.get(key, Quotas()).patched(patch)
            self._persist(collection, tenant, quotas)
            self._tenants[key] = quotas
            self._note_query_limits()
        audit.note(quotas=dict(patch))
        return quotas.over(self.defaults)

    def _persist(self, collection: Collection, tenant: str | None, quotas: Quotas) -> None:
        batch = Batch(change=collection_changed("quotas", collection.name))
        key = keys.quota_key(collection.config.cid, tenant)
        if quotas.empty:
            batch.delete(keys.CF_META, key)
        else:
            batch.put(keys.CF_META, key, orjson.dumps(quotas.to_dict()))
        # Under the collection's write mutex: a collection dropped meanwhile raises NotFound
        # instead of leaving a quota key behind it.
        with collection.write_mutex():
            collection.store.write(batch)

    def forget(self, collection: str) -> None:
        """A dropped collection's quotas and buckets (its keys went with its drop batch)."""
        with self._lock:
            self._drop_overrides(collection)
            self._note_query_limits()
        self._limiter.forget(lambda key: isinstance(key, tuple) and key[0] == collection)

    def _drop_overrides(self, collection: str) -> None:
        """Caller holds the lock."""
        self._collections.pop(collection, None)
        for key in [k for k in self._tenants if k[0] == collection]:
            del self._tenants[key]

    # -- what is in force -------------------------------------------------------------

    def limits_queries(self, collection: str) -> bool:
        """Whether any query rate applies in the collection (its own, a tenant's, a default).
        Read workers send such a collection's queries to the writer, which alone holds the
        buckets: a bucket per process would multiply the rate by the process count."""
        return self.defaults.query_rate is not None or collection in self._queries_limited

    def _note_query_limits(self) -> None:
        """Recompute `limits_queries`'s set, then swap it in whole (a reader on another
        thread sees the old set or the new one). Caller holds the lock."""
        limited = {c for c, q in self._collections.items() if q.query_rate is not None}
        limited |= {c for (c, _), q in self._tenants.items() if q.query_rate is not None}
        self._queries_limited = frozenset(limited)

    def collection_quotas(self, collection: str) -> Quotas:
        return self._collections.get(collection, Quotas())

    def tenant_quotas(self, collection: str, tenant: str) -> Quotas:
        own = self._tenants.get((collection, tenant))
        return self.defaults if own is None else own.over(self.defaults)

    # -- enforcement ------------------------------------------------------------------

    def admit(self, collection: str, tenant: str | None, kind: RateKind, cost: float) -> None:
        """Charge a request to the tenant's and the collection's buckets, or raise OverQuota."""
        charges = [((collection, None, kind), self.collection_quotas(collection).rate(kind))]
        if tenant is not None:
            charges.append(
                ((collection, tenant, kind), self.tenant_quotas(collection, tenant).rate(kind))
            )
        refusal = self._limiter.admit(charges, cost)
        if refusal is None:
            return
        _, refused_tenant, _ = refusal.key  # type: ignore[misc]
        rate = dict(charges)[refusal.key]
        assert rate is not None
        whose = f"collection {collection!r}" if refused_tenant is None else f"tenant {tenant!r}"
        noun = "read" if kind == "query" else "write"
        raise OverQuota(
            f"{kind}_rate: {whose} is over its quota of {rate.per_second:g} {noun} requests/s "
            f"(burst {rate.burst})",
            retry_after_s=refusal.retry_after_s,
        )

    def check_batch(self, collection: str, tenant: str, points: int) -> None:
        limits = [
            (self.tenant_quotas(collection, tenant).max_upsert_batch, f"tenant {tenant!r}"),
            (self.collection_quotas(collection).max_upsert_batch, f"collection {collection!r}"),
        ]
        for limit, whose in limits:
            if limit is not None and points > limit:
                raise OverQuota(
                    f"max_upsert_batch: the batch has {points} points; the quota of {whose} "
                    f"is {limit}",
                    retry_after_s=CAPACITY_RETRY_AFTER_S,
                )

    def admission(self, collection: str) -> CollectionAdmission:
        return CollectionAdmission(self, collection)


class NoQuotas:
    """The admission of a collection outside a Database (tools, benchmarks): no limits."""

    def check_new_points(
        self, tenant: str, owned_points: int, collection_points: int, new_points: int
    ) -> None:
        """Raise OverQuota if `new_points` more would exceed a points quota. Called by
        `Collection.upsert` under its write mutex, before anything is written."""


NO_QUOTAS = NoQuotas()


class CollectionAdmission(NoQuotas):
    def __init__(self, book: QuotaBook, collection: str):
        self._book = book
        self._collection = collection

    def check_new_points(
        self, tenant: str, owned_points: int, collection_points: int, new_points: int
    ) -> None:
        if new_points == 0:
            return  # updates never need room
        book, name = self._book, self._collection
        tenant_max = book.tenant_quotas(name, tenant).max_points
        if tenant_max is not None and owned_points + new_points > tenant_max:
            raise OverQuota(
                f"max_points: tenant {tenant!r} owns {owned_points} points and the batch adds "
                f"{new_points}; its quota is {tenant_max}",
                retry_after_s=CAPACITY_RETRY_AFTER_S,
            )
        collection_max = book.collection_quotas(name).max_points
        if collection_max is not None and collection_points + new_points > collection_max:
            # No count here: a tenant key must not learn the collection's size.
            raise OverQuota(
                f"max_points: collection {name!r} has no room for {new_points} new points "
                f"(its quota is {collection_max})",
                retry_after_s=CAPACITY_RETRY_AFTER_S,
            )
