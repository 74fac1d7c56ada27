"""Cluster-wide rate limits: GCRA run atomically inside Redis (a Lua script).

The decisions the policy server reads in one reactor turn go to Redis together, in one
script call (at most ``MAX_BATCH``), so the round trip and the client's own work are shared.

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

from twisted.internet.defer import Deferred

from sidecar import metrics
from sidecar.policy.limits import CompiledRule, RateLimiter

log = logging.getLogger("sidecar.ratelimit")

CHECK, CONSUME, FORCE = 0, 1, 2

# One call decides a batch: every decision the policy server read in one reactor turn, in
# order, atomically (a later decision on the same key sees what an earlier one counted).
# ARGV: number of decisions; per decision: number of rules; per rule: mode, cost, number of
# windows, then (interval, limit) per window. KEYS: one per window, in the same order.
# Returns, per decision, {index of the rule that refused (0: none), index of its window}.
# Rules are checked in order; the first refusal ends its decision (earlier rules keep their count).
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {}
local a, k = 2, 0
for d = 1, tonumber(ARGV[1]) do
  local nrules = tonumber(ARGV[a])
  a = a + 1
  local refused_rule, refused_win = 0, 0
  for r = 1, nrules do
    local mode, cost, nw = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    a = a + 3
    if refused_rule == 0 then
      local tats = {}
      for w = 1, nw do
        local interval, limit = tonumber(ARGV[a + 2 * w - 2]), tonumber(ARGV[a + 2 * w - 1])
        local tat = tonumber(redis.call('GET', KEYS[k + w]) or now)
        if tat < now then tat = now end
        local new = tat + cost * interval
        if mode ~= 2 and new - now > limit + 1e-9 then
          refused_rule, refused_win = r, w
          break
        end
        tats[w] = new
      end
      if refused_rule == 0 and mode ~= 0 then
        for w = 1, nw do
          redis.call('SET', KEYS[k + w], tostring(tats[w]), 'PX', math.ceil((tats[w] - now) * 1000) + 1000)
        end
      end
    end
    a = a + 2 * nw
    k = k + nw
  end
  out[#out + 1] = refused_rule
  out[#out + 1] = refused_win
end
return out
"""
CONNECT_TIMEOUT = 2.0
MAX_BATCH = 100  # decisions per script call: keeps each call short for the other relays


def redis_key(key: str, window: int) -> str:
    """Windows of one key share a hash tag (``{key}``)."""
    return f"sidecar:rl:{{{key}}}#{window}"


class RedisRateLimiter:
    """Same interface as RateLimiter.check, but answers with a Deferred while Redis is up."""

    def __init__(
        self, local: RateLimiter, url: str, timeout: float, fallback: str, reactor: Any, pool_size: int = 1
    ) -> None:
        import txredisapi

        self.local = local
        self.rules = local.rules
        self.timeout = timeout
        self.fallback = fallback
        self.reactor = reactor
        u = urlsplit(url)
        dbid = int(u.path.strip("/") or 0)
        self.redis = txredisapi.lazyConnectionPool(
            host=u.hostname or "127.0.0.1",
            port=u.port or 6379,
            dbid=dbid,
            poolsize=pool_size,
            reconnect=True,
            password=u.password,
            connectTimeout=CONNECT_TIMEOUT,
        )
        self._was_up: bool | None = None
        self._starting = True
        self._connect_deadline = reactor.seconds() + CONNECT_TIMEOUT
        self._queue: list[tuple[list[tuple[CompiledRule, str, int]], Deferred]] = []
        self._flush_call: Any = None
        self._fallbacks = {r: metrics.RATELIMIT_FALLBACK.labels(r) for r in ("down", "timeout", "error")}

    def __bool__(self) -> bool:
        return bool(self.rules)

    @property
    def up(self) -> bool:
        up = bool(self.redis._factory.size)
        if up:
            self._starting = False
        elif self._starting:
            if self.reactor.seconds() < self._connect_deadline:
                # Just started, not connected yet: a decision waits for the connection (each at most
                # redis_timeout), so the first requests are counted in Redis, not by the fallback.
                return True
            self._starting = False
        if up != self._was_up:
            self._was_up = up
            metrics.RATELIMIT_REDIS_UP.set(1 if up else 0)
            (log.info if up else log.warning)(
                "Redis rate-limit backend %s", "connected" if up else f"unavailable: fallback '{self.fallback}' applies"
            )
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
        d: Deferred = Deferred()
        self._queue.append((todo, d))
        if self._flush_call is None:  # once per reactor turn: everything read in this turn goes in one call
            self._flush_call = self.reactor.callLater(0, self._flush)
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

    def _flush(self) -> None:
        self._flush_call = None
        queue, self._queue = self._queue, []
        pending = [(todo, d) for todo, d in queue if not d.called]  # not timed out meanwhile
        for i in range(0, len(pending), MAX_BATCH):
            batch = pending[i : i + MAX_BATCH]
            metrics.RATELIMIT_REDIS_BATCH.observe(len(batch))
            keys: list[str] = []
            args: list[Any] = [len(batch)]
            for todo, _d in batch:
                args.append(len(todo))
                for rule, key, mode in todo:
                    args += [mode, 1, len(rule.windows)]
                    for n, w in enumerate(rule.windows):
                        args += [repr(w.interval), repr(w.capacity * w.interval)]
                        keys.append(redis_key(key, n))
            # txredisapi's eval sends EVALSHA once Redis has the script, the script again after NOSCRIPT
            self.redis.eval(GCRA_SCRIPT, keys, args).addCallbacks(
                self._answer, self._failed, callbackArgs=(batch,), errbackArgs=(batch,)
            )

    @staticmethod
    def _answer(res: Any, batch: list[tuple[list[tuple[CompiledRule, str, int]], Deferred]]) -> None:
        for i, (todo, d) in enumerate(batch):
            if d.called:  # timed out: the fallback has answered it
                continue
            refused = int(res[2 * i])
            if refused == 0:
                d.callback(None)
            else:
                rule, key, _mode = todo[refused - 1]
                d.callback((rule.name, key, rule.reply(key, rule.windows[int(res[2 * i + 1]) - 1])))

    @staticmethod
    def _failed(err: Any, batch: list[tuple[list[tuple[CompiledRule, str, int]], Deferred]]) -> None:
        for _todo, d in batch:
            if not d.called:
                d.errback(err)

    def close(self) -> Deferred:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        return self.redis.disconnect()
