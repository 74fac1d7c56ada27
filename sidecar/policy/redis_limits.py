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
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred

from sidecar import metrics
from sidecar.policy.limits import CompiledRule, RateLimiter
from sidecar.policy.redis_client import RedisConnectionLost, RedisScriptClient
from sidecar.policy.redis_script import CHECK, CONSUME, FORCE, entry_code, gcra_script, redis_key

log = logging.getLogger("sidecar.ratelimit")

CONNECT_TIMEOUT = 2.0
MAX_BATCH = 100  # decisions per script call: keeps each call short for the other relays

# One queued decision: its rules' codes, the keys of their windows, (rule, key) of each rule
# (to word a refusal), the Deferred the policy engine waits on, and what the fallback needs.
Pending = tuple[bytes, list[bytes], list[tuple[CompiledRule, str]], Deferred, Mapping[str, str], str, float]


class RedisRateLimiter:
    """Same interface as RateLimiter.check, but answers with a Deferred while Redis is up."""

    def __init__(self, local: RateLimiter, url: str, timeout: float, fallback: str, reactor: Any) -> None:
        self.local = local
        self.rules = local.rules
        self.timeout = timeout
        self.fallback = fallback
        self.reactor = reactor
        u = urlsplit(url)
        self.redis = RedisScriptClient(
            reactor,
            gcra_script(self.rules),
            host=u.hostname or "127.0.0.1",
            port=u.port or 6379,
            db=int(u.path.strip("/") or 0),
            username=u.username or None,
            password=u.password,
            connect_timeout=CONNECT_TIMEOUT,
        )
        self._was_up: bool | None = None
        self._starting = True
        self._connect_deadline = reactor.seconds() + CONNECT_TIMEOUT
        self._queue: list[Pending] = []
        self._queued_at = 0.0
        self._held: list[tuple[list[Pending], Any]] = []  # batches waiting for the first connection
        self.redis.on_connect = self._connected
        self._flush_call: Any = None
        # per protocol state, the rules that apply, in order: (rule, its code with the mode, its windows)
        # RCPT consumes per-recipient rules and checks per-message ones, DATA only checks per-message
        # rules, END-OF-MESSAGE counts the message (once per instance)
        plans: dict[str, list[tuple[CompiledRule, bytes, range]]] = {"RCPT": [], "DATA": [], "END-OF-MESSAGE": []}
        for i, r in enumerate(self.rules):
            windows = range(len(r.windows))
            if r.messages:
                plans["RCPT"].append((r, entry_code(i, CHECK), windows))
                plans["DATA"].append((r, entry_code(i, CHECK), windows))
                plans["END-OF-MESSAGE"].append((r, entry_code(i, FORCE), windows))
            else:
                plans["RCPT"].append((r, entry_code(i, CONSUME), windows))
        self._plans = {state: plan for state, plan in plans.items() if plan or state == "END-OF-MESSAGE"}
        self._batch_size = metrics.RATELIMIT_REDIS_BATCH
        self._fallbacks = {r: metrics.RATELIMIT_FALLBACK.labels(r) for r in ("down", "timeout", "error")}

    def __bool__(self) -> bool:
        return bool(self.rules)

    @property
    def up(self) -> bool:
        up = self.redis.connected
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
        if self.redis.conn is None and not self.up:  # connected: no need to ask (up also keeps the gauge)
            return self._fallback(attrs, state, now, "down")
        plan = self._plan(attrs, state)
        if plan is None:
            return None
        d: Deferred = Deferred()
        if not self._queue:  # once per reactor turn: everything read in this turn goes in one call
            self._queued_at = self.reactor.seconds()
            self._flush_call = self.reactor.callLater(0, self._flush)
        self._queue.append((*plan, d, attrs, state, now))
        return d

    def _plan(
        self, attrs: Mapping[str, str], state: str
    ) -> tuple[bytes, list[bytes], list[tuple[CompiledRule, str]]] | None:
        """The script's view of one decision: codes, window keys, and (rule, key) per rule; None: nothing to ask."""
        plan = self._plans.get(state)
        if plan is None or (state == "END-OF-MESSAGE" and not self.local.first_commit(attrs)):
            return None
        todo = []
        for rule, code, windows in plan:
            plain = rule.plain
            if plain is not None:  # key_value's one-attribute case, inlined (as in RateLimiter.check)
                v = attrs.get(plain, "").lower()
                if not v or v in rule.exempt_values:
                    continue
                key = rule.prefix + v
            else:
                maybe = rule.key_value(attrs)
                if maybe is None:
                    continue
                key = maybe
            todo.append((rule, key, code, windows))
        if not todo:
            return None
        if len(todo) == 1:  # the usual case: one rule
            rule, key, code, windows = todo[0]
            return code, [redis_key(key, n).encode() for n in windows], [(rule, key)]
        return (
            b"".join(code for _r, _k, code, _w in todo),
            [redis_key(key, n).encode() for _r, key, _c, windows in todo for n in windows],
            [(rule, key) for rule, key, _c, _w in todo],
        )

    def _flush(self) -> None:
        self._flush_call = None
        queue, self._queue = self._queue, []
        # one timer for the turn's decisions: each still gets its answer within redis_timeout
        delay = max(0.0, self._queued_at + self.timeout - self.reactor.seconds())
        for i in range(0, len(queue), MAX_BATCH):
            batch = queue[i : i + MAX_BATCH]
            self._batch_size.observe(len(batch))
            timer = self.reactor.callLater(delay, self._expired, batch, "timeout", None)
            if not self.redis.connected and self._starting:  # sent once connected, if still in time
                self._held.append((batch, timer))
                continue
            self._send(batch, timer)

    def _send(self, batch: list[Pending], timer: Any) -> None:
        keys: list[bytes] = []
        for p in batch:
            keys += p[1]
        try:
            self.redis.run(keys, [p[0] for p in batch], partial(self._reply, batch, timer))
        except RedisConnectionLost as e:  # the connection went away since the check
            timer.cancel()
            self._expired(batch, "error", e)

    def _connected(self) -> None:
        self.up  # noqa: B018 - no longer starting; the gauge and the log say connected
        held, self._held = self._held, []
        for batch, timer in held:
            if timer.active():
                self._send(batch, timer)

    def _reply(self, batch: list[Pending], timer: Any, res: Any) -> None:
        if timer.active():
            timer.cancel()
        if isinstance(res, Exception):
            self._expired(batch, "error", res)
        else:
            self._answer(res, batch)

    @staticmethod
    def _answer(res: Any, batch: list[Pending]) -> None:
        refused = {}
        for j in range(0, len(res), 3):  # only the refusals: (decision, rule within it, window), 1-based
            refused[int(res[j]) - 1] = (int(res[j + 1]) - 1, int(res[j + 2]) - 1)
        for n, (_codes, _keys, rules, d, _a, _s, _t) in enumerate(batch):
            if d.called:  # timed out: the fallback has answered it
                continue
            hit = refused.get(n)
            if hit is None:
                d.callback(None)
            else:
                rule, key = rules[hit[0]]
                d.callback((rule.name, key, rule.reply(key, rule.windows[hit[1]])))

    def _expired(self, batch: list[Pending], why: str, err: Any) -> None:
        """The fallback answers every decision of ``batch`` still waiting (Redis too slow, or failed)."""
        waiting = [p for p in batch if not p[3].called]
        if not waiting:
            return
        if why == "timeout":
            log.warning("Redis rate-limit check: no answer within %gs for %d decisions", self.timeout, len(waiting))
        else:
            log.warning("Redis rate-limit check failed for %d decisions: %s", len(waiting), err)
        for _codes, _keys, _rules, d, attrs, state, now in waiting:
            d.callback(self._fallback(attrs, state, now, why))

    def close(self) -> Deferred:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        return self.redis.close()
