"""Token buckets by key (one per webhook), held in this process: each api replica limits on its own, so the
rate a hook is allowed across the deployment is the setting times the number of replicas."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class TokenBuckets:
    def __init__(
        self, rate: float, burst: int, *, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """`rate` tokens a second refill each bucket up to `burst`; the `max_keys` least recently used are kept
        (a forgotten key starts full again, which only ever lets a request through that a full bucket would)."""
        self._rate = rate
        self._burst = float(burst)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Take one token from `key`'s bucket: 0.0 if there was one, else the seconds until there is."""
        now = self._clock()
        tokens, at = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self._rate
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait
