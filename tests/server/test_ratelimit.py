"""Token buckets with a fake clock: burst, refill, debt of large batches, all-or-nothing."""

from __future__ import annotations

import pytest

from server.ratelimit import Rate, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_full_bucket_admits_a_burst_then_refills_at_the_rate(clock: Clock) -> None:
    limiter, rate = RateLimiter(clock), Rate(2.0, 3)
    assert [limiter.admit([("t", rate)], 1) for _ in range(3)] == [None] * 3
    refusal = limiter.admit([("t", rate)], 1)
    assert refusal is not None and refusal.key == "t"
    assert refusal.retry_after_s == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.admit([("t", rate)], 1) is None
    clock.now += 60  # refills up to the burst, not beyond
    assert [limiter.admit([("t", rate)], 1) for _ in range(4)][-1] is not None


def test_a_batch_larger_than_the_burst_is_admitted_from_a_full_bucket_and_leaves_debt(
    clock: Clock,
) -> None:
    limiter, rate = RateLimiter(clock), Rate(1.0, 2)
    assert limiter.admit([("t", rate)], 5) is None  # tokens: 2 - 5 = -3
    refusal = limiter.admit([("t", rate)], 1)
    assert refusal is not None and refusal.retry_after_s == pytest.approx(4.0)
    clock.now += 4
    assert limiter.admit([("t", rate)], 1) is None


def test_buckets_are_charged_together_or_not_at_all(clock: Clock) -> None:
    limiter = RateLimiter(clock)
    tight, loose = Rate(1.0, 1), Rate(1.0, 10)
    assert limiter.admit([("tenant", tight), ("collection", loose)], 1) is None
    for _ in range(5):
        refusal = limiter.admit([("tenant", tight), ("collection", loose)], 1)
        assert refusal is not None and refusal.key == "tenant"
    # The refusals took nothing from the collection's bucket: 9 tokens are left.
    assert [limiter.admit([("collection", loose)], 1) for _ in range(10)].count(None) == 9


def test_unlimited_buckets_are_not_tracked(clock: Clock) -> None:
    limiter = RateLimiter(clock)
    assert all(limiter.admit([("t", None)], 1000) is None for _ in range(100))
    assert Rate.of(None, 5) is None
    assert Rate.of(2.5, None) == Rate(2.5, 3)
    assert Rate.of(0.1, None) == Rate(0.1, 1)


def test_forget_drops_buckets(clock: Clock) -> None:
    limiter, rate = RateLimiter(clock), Rate(1.0, 1)
    assert limiter.admit([(("c", "t"), rate)], 1) is None
    assert limiter.admit([(("c", "t"), rate)], 1) is not None
    limiter.forget(lambda key: key[0] == "c")
    assert limiter.admit([(("c", "t"), rate)], 1) is None
