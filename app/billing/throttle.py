"""Throttles that count per key (an account, a customer, an IP address) in Flask-Limiter's storage
(Redis in production, memory in the embedded default), with a moving window per kind of key.

Each kind of key has its own limit, and the per-IP limits are several times the per-account ones,
so one customer's failures lock out that customer (and never a neighbour behind the same address)
long before the shared address is limited. Keys are built from what was typed (a normalised email),
never from whether an account exists, so a lockout reveals nothing about accounts.
"""

import math
import time
from collections.abc import Mapping

from limits import parse as parse_limit
from limits.strategies import MovingWindowRateLimiter


class Throttle:
    def __init__(self, storage, namespace: str, limits: Mapping[str, str]):
        """`limits` maps a kind of key to a limit, e.g. {"account": "10 per 15 minutes", "ip": "50 per 15 minutes"}."""
        self.namespace = namespace
        self.limits = {kind: parse_limit(text) for kind, text in limits.items()}
        self.strategy = MovingWindowRateLimiter(storage)

    def retry_after_seconds(self, keys: Mapping[str, str]) -> int | None:
        """Seconds until every given key may try again, or None when none is limited."""
        waits = []
        for kind, key in keys.items():
            limit = self.limits[kind]
            if not self.strategy.test(limit, self.namespace, kind, key):
                reset_at = self.strategy.get_window_stats(limit, self.namespace, kind, key).reset_time
                waits.append(max(1, math.ceil(reset_at - time.time())))
        return max(waits) if waits else None

    def record(self, keys: Mapping[str, str]) -> None:
        """Count one attempt (or one failure, for throttles that count failures) against each key."""
        for kind, key in keys.items():
            self.strategy.hit(self.limits[kind], self.namespace, kind, key)

    def reset(self, keys: Mapping[str, str]) -> None:
        """Forget the counts of these keys (e.g. an account's failures after its owner reset the password)."""
        for kind, key in keys.items():
            self.strategy.clear(self.limits[kind], self.namespace, kind, key)


def retry_message(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return f"Too many attempts. Try again in {minutes} minute{'s' if minutes != 1 else ''}."
