"""Operator access to the Redis rate-limit counters (``sidecar limits`` and the API's /limits)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sidecar.config import Config


def redis_tats(cfg: Config, key: str, n: int) -> tuple[dict[str, float], float]:
    """The stored theoretical arrival times of ``key``'s ``n`` windows, and Redis's clock."""
    import redis

    from sidecar.policy.redis_script import redis_key

    r = redis.Redis.from_url(cfg.ratelimit.redis_url, socket_timeout=5)
    secs, micros = r.time()
    values = r.mget([redis_key(key, i) for i in range(n)])
    return {f"{key}#{i}": float(v) for i, v in enumerate(values) if v is not None}, secs + micros / 1e6


def redis_reset(cfg: Config, key: str, n: int) -> int:
    """Clear ``key``'s ``n`` windows; returns the number of Redis keys deleted."""
    import redis

    from sidecar.policy.redis_script import redis_key

    r = redis.Redis.from_url(cfg.ratelimit.redis_url, socket_timeout=5)
    return int(r.delete(*[redis_key(key, i) for i in range(n)]))
