"""Cluster-wide rate limits: GCRA run atomically inside Redis (one Lua script per decision).

Several relays share one Redis, so together they admit no more than rate + burst. The
script reads Redis's own clock, so relay clocks need not agree. When Redis is not
connected, or does not answer within ``redis_timeout``, the configured fallback decides
at once (local in-memory limits by default) and a metric says so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, inlineCallbacks

from sidecar import metrics
from sidecar.policy.limits import CompiledRule, RateLimiter

log = logging.getLogger("sidecar.ratelimit")

CHECK, CONSUME, FORCE = 0, 1, 2

# KEYS: one per window. ARGV: mode, cost, then (interval, limit) per window.
# Returns {allowed (1/0), index of the window that refused (1-based), retry-after}.
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local mode = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local tats = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[1 + 2 * i])
  local limit = tonumber(ARGV[2 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new = tat + cost * interval
  if mode ~= 2 and new - now > limit + 1e-9 then
    return {0, i, tostring(new - now - limit)}
  end
  tats[i] = new
end
if mode ~= 0 then
  for i = 1, #KEYS do
    redis.call('SET', KEYS[i], tostring(tats[i]), 'PX', math.ceil((tats[i] - now) * 1000) + 1000)
  end
end
return {1, 0, '0'}
"""


def redis_key(key: str, window: int) -> str:
    """Windows of one key share a hash tag, so the script works on Redis Cluster too."""
    return f"sidecar:rl:{{{key}}}#{window}"


class RedisRateLimiter:
    """Same interface as RateLimiter.check, but answers with a Deferred while Redis is up."""

    def __init__(self, local: RateLimiter, url: str, timeout: float, fallback: str, reactor: Any,
                 pool_size: int = 4) -> None:
        import txredisapi

        self.local = local
        self.rules = local.rules
        self.timeout = timeout
        self.fallback = fallback
        self.reactor = reactor
        u = urlsplit(url)
        dbid = int(u.path.strip("/") or 0)
        self.redis = txredisapi.lazyConnectionPool(host=u.hostname or "127.0.0.1", port=u.port or 6379,
                                                   dbid=dbid, poolsize=pool_size, reconnect=True,
                                                   password=u.password, connectTimeout=2)
        self._was_up: bool | None = None
        self._fallbacks = {r: metrics.RATELIMIT_FALLBACK.labels(r) for r in ("down", "timeout", "error")}

    def __bool__(self) -> bool:
        return bool(self.rules)

    @property
    def up(self) -> bool:
        up = bool(self.redis._factory.size)
        if up != self._was_up:
            self._was_up = up
            metrics.RATELIMIT_REDIS_UP.set(1 if up else 0)
            (log.info if up else log.warning)("Redis rate-limit backend %s", "connected" if up else
                                              f"unavailable: fallback '{self.fallback}' applies")
        return up

    def _fallback(self, attrs: Mapping[str, str], state: str, now: float, why: str) -> Any:
        self._fallbacks[why].inc()
        if self.fallback == "local":
            return self.local.check(attrs, state, now)
        if self.fallback == "defer":
            return ("redis-unavailable", "", "DEFER_IF_PERMIT 4.3.0 rate limiting temporarily unavailable")
        return None

    def check(self, attrs: Mapping[str, str], state: str, now: float) -> Any:
        if not self.up:
            return self._fallback(attrs, state, now, "down")
        todo = self._plan(attrs, state)
        if not todo:
            return None
        d = self._run(todo)
        d.addTimeout(self.timeout, self.reactor)

        def failed(err: Any) -> Any:
            from twisted.internet.defer import TimeoutError as DeferTimeout

            why = "timeout" if err.check(DeferTimeout) else "error"
            log.warning("Redis rate-limit check failed (%s): %s", why, err.getErrorMessage())
            return self._fallback(attrs, state, now, why)

        return d.addErrback(failed)

    def _plan(self, attrs: Mapping[str, str], state: str) -> list[tuple[CompiledRule, str, int]]:
        todo = []
        if state == "END-OF-MESSAGE":
            if not self.local.first_commit(attrs):
                return []
            return [(r, k, FORCE) for r in self.rules if r.messages and (k := r.key_value(attrs)) is not None]
        for rule in self.rules:
            if rule.messages:
                if state not in ("RCPT", "DATA"):
                    continue
                mode = CHECK
            else:
                if state != "RCPT":
                    continue
                mode = CONSUME
            key = rule.key_value(attrs)
            if key is not None:
                todo.append((rule, key, mode))
        return todo

    @inlineCallbacks
    def _run(self, todo: list[tuple[CompiledRule, str, int]]) -> Any:
        for rule, key, mode in todo:
            args: list[Any] = [mode, 1]
            for w in rule.windows:
                args += [repr(w.interval), repr(w.capacity * w.interval)]
            res = yield self.redis.eval(GCRA_SCRIPT, [redis_key(key, i) for i in range(len(rule.windows))], args)
            if int(res[0]) == 0:
                return rule.name, key, rule.reply(key, rule.windows[int(res[1]) - 1])
        return None

    def close(self) -> Deferred:
        return self.redis.disconnect()
