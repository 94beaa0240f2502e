"""The per-hook token buckets: a burst, then the refill rate, each key on its own."""

from __future__ import annotations

from ame_api.rate_limits import TokenBuckets


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate() -> None:
    clock = _Clock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == 0.5  # one token comes back in 1/rate seconds
    assert buckets.take("b") == 0.0  # another hook has its own bucket
    clock.now += 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    clock.now += 10
    assert [buckets.take("a") for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # refilled to the burst, no further


def test_the_least_recently_used_keys_are_forgotten() -> None:
    clock = _Clock()
    buckets = TokenBuckets(rate=1.0, burst=1, max_keys=2, clock=clock)
    assert buckets.take("a") == 0.0
    assert buckets.take("b") == 0.0
    assert buckets.take("c") == 0.0  # "a" is forgotten: it starts full again
    assert buckets.take("a") == 0.0
    assert buckets.take("c") > 0
