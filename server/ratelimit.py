"""Token buckets: request rates per (collection, tenant) and per collection.

A bucket holds up to `burst` tokens and refills at `rate` tokens a second. A request of cost
`c` is admitted when the bucket holds at least `min(c, burst)` tokens, and then takes all `c`:
a batch larger than the burst is admitted from a full bucket and leaves it in debt, so the
long-run rate holds and no batch size is refused for ever. Several buckets (the tenant's and
the collection's) are checked together and charged only if all admit: a refused request
costs nothing.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: int

    @classmethod
    def of(cls, per_second: float | None, burst: int | None) -> Rate | None:
        """None when unlimited; the burst defaults to one second's worth (at least 1)."""
        if per_second is None:
            return None
        return cls(per_second, burst if burst is not None else max(1, math.ceil(per_second)))


@dataclass(frozen=True, slots=True)
class Refusal:
    key: Hashable
    retry_after_s: float


class _Bucket:
    __slots__ = ("rate", "tokens", "updated")

    def __init__(self, rate: Rate, now: float):
        self.rate = rate
        self.tokens = float(rate.burst)
        self.updated = now

    def refill(self, rate: Rate, now: float) -> None:
        self.rate = rate  # quotas may have changed: the level is kept, clipped to the burst
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(rate.burst), self.tokens + elapsed * rate.per_second)
        self.updated = now

    def wait_s(self, cost: float) -> float:
        """Seconds until `cost` can be admitted; 0 if it can now."""
        needed = min(cost, self.rate.burst) - self.tokens
        return 0.0 if needed <= 0 else needed / self.rate.per_second


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._buckets: dict[Hashable, _Bucket] = {}
        self._lock = threading.Lock()  # guards _buckets and every bucket's fields

    def admit(self, charges: Sequence[tuple[Hashable, Rate | None]], cost: float) -> Refusal | None:
        """Charge `cost` to every bucket listed (None: unlimited), or to none of them.

        Returns None when admitted, else the bucket that refused and when to retry (the
        longest wait among the buckets that are short).
        """
        limited = [(key, rate) for key, rate in charges if rate is not None]
        if not limited:
            return None
        with self._lock:
            now = self._clock()
            buckets = []
            refusal: Refusal | None = None
            for key, rate in limited:
                bucket = self._buckets.get(key)
                if bucket is None:
                    bucket = self._buckets[key] = _Bucket(rate, now)
                else:
                    bucket.refill(rate, now)
                wait = bucket.wait_s(cost)
                if wait > 0 and (refusal is None or wait > refusal.retry_after_s):
                    refusal = Refusal(key, wait)
                buckets.append(bucket)
            if refusal is not None:
                return refusal
            for bucket in buckets:
                bucket.tokens -= cost
            return None

    def forget(self, predicate: Callable[[Hashable], bool]) -> None:
        """Drop buckets (a dropped collection's), so that memory follows live tenants."""
        with self._lock:
            for key in [k for k in self._buckets if predicate(k)]:
                del self._buckets[key]
