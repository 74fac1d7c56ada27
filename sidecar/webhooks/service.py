"""WebhookService: derive deliveries from the feeds and POST them, never blocking the reactor.

Database work runs in the service's thread pool (``deferToThreadPool``); HTTP goes through
Twisted's ``Agent``. Each tick: materialise new deliveries, claim those that are due and
first in line for their address (up to ``concurrency`` in flight per subscription), send them concurrently,
record each outcome as it comes; a delivery that ends starts the next claim at once, so a
slow or broken receiver holds up no other subscription. A failure is retried with
exponential backoff until ``webhooks.retry_for`` has passed, then the delivery is dead
(visible and re-deliverable through API and CLI).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.internet.threads import deferToThreadPool
from twisted.web.http_headers import Headers

from sidecar.config import Config
from sidecar.metrics import WEBHOOK_DELIVERIES, WEBHOOK_ERRORS
from sidecar.webhooks import deliveries, outbox
from sidecar.webhooks.client import Body, closed_before_answer, describe, make_agent, response_code
from sidecar.webhooks.signing import HEADER, sign

log = logging.getLogger("sidecar.webhooks")
USER_AGENT = b"postfix-sidecar-webhooks/1"


class WebhookService(service.MultiService):
    """Add to the top MultiService: ``WebhookService(cfg, engine, reactor, pool)``."""

    def __init__(
        self,
        cfg: Config,
        engine: Any,
        reactor: Any,
        pool: Any,
        *,
        backoff_base: float | None = None,
        backoff_cap: float | None = None,
        concurrency: int = 20,
        clock: Callable[[], float] = time.time,
        agent: Any = None,
    ) -> None:
        super().__init__()
        self.cfg, self.engine, self.reactor, self.pool = cfg, engine, reactor, pool
        self.wcfg = cfg.webhooks
        self.subs = {s.name: s for s in outbox.subscriptions(self.wcfg.subscriptions)}
        self.outbox = outbox.Outbox(engine, list(self.subs.values()))
        self.backoff_base = self.wcfg.backoff if backoff_base is None else backoff_base
        self.backoff_cap = self.wcfg.backoff_max if backoff_cap is None else backoff_cap
        self.concurrency = concurrency
        self.clock = clock
        self.in_flight: dict[int, str] = {}  # delivery id -> subscription
        self.full: set[str] = set()  # subscriptions with ``concurrency`` deliveries in flight
        self.busy = self.again = self.again_materialise = False
        self.ticks = 0
        self.errors = 0
        # by CA file ("": the system's trust store): (keeping connections alive, a new connection each time)
        self.agents: dict[str, tuple[Any, Any]] = {}
        self._http_pools: list[Any] = []
        for sub in self.subs.values():
            if agent is not None:
                self.agents[sub.ca_file] = (agent, agent)
            elif sub.ca_file not in self.agents:
                kept, hpool = make_agent(
                    reactor, timeout=self.wcfg.timeout, concurrency=concurrency, ca_file=sub.ca_file
                )
                fresh, _ = make_agent(
                    reactor, timeout=self.wcfg.timeout, concurrency=concurrency, ca_file=sub.ca_file, persistent=False
                )
                self.agents[sub.ca_file] = (kept, fresh)
                self._http_pools.append(hpool)
        if self.subs:
            TimerService(self.wcfg.poll_interval, self.tick).setServiceParent(self)

    def _in_pool(self, f: Any, *a: Any, **kw: Any) -> Deferred:
        return deferToThreadPool(self.reactor, self.pool, f, *a, **kw)

    def tick(self, materialise: bool = True) -> Deferred | None:
        """One round: derive new deliveries (unless ``materialise`` is false), then start the due ones.

        A round never waits for a delivery to finish (a slow receiver holds up nobody else); a
        round asked for while one runs is run right after it. Errors are logged and counted.
        """
        if self.busy:
            self.again = True
            self.again_materialise |= materialise
            return None
        self.busy, self.again, self.again_materialise = True, False, False
        d = self.run_once(materialise=materialise)

        def failed(err: Any) -> None:
            self.errors += 1
            WEBHOOK_ERRORS.inc()
            log.warning("webhook dispatch failed (will retry): %s", describe(err))

        def finished(_: Any) -> None:
            self.busy = False
            if self.again and self.running:
                self.tick(self.again_materialise)

        d.addErrback(failed)
        d.addBoth(finished)
        return d

    @inlineCallbacks
    def run_once(self, max_rounds: int = 50, materialise: bool = True) -> Any:
        """Materialise, then start due deliveries while there is room for them; returns how many started."""
        if materialise:
            self.ticks += 1
            yield self._in_pool(self.outbox.materialise, self.clock())
            for name, error in self.outbox.failures.items():  # that subscription catches up next round
                self.errors += 1
                WEBHOOK_ERRORS.inc()
                log.warning("webhook deliveries for %s not derived (will retry): %s", name, error)
        started = 0
        wanting = set(self.subs)  # subscriptions that may have more due deliveries
        for _ in range(max_rounds):
            busy = Counter(self.in_flight.values())
            rooms = {name: self.concurrency - busy[name] for name in wanting}
            self.full = {name for name in self.subs if busy[name] >= self.concurrency}
            rooms = {name: room for name, room in rooms.items() if room > 0}
            if not rooms:
                break
            rows = yield self._in_pool(self._claim, rooms, set(self.in_flight))
            for r in rows:
                self._deliver(r)
            started += len(rows)
            got = Counter(r["subscription"] for r in rows)
            wanting = {name for name, room in rooms.items() if got[name] >= room}
        return started

    def _claim(self, rooms: dict[str, int], exclude: set[int]) -> list[dict[str, Any]]:
        """Due deliveries, at most ``rooms[name]`` for each subscription (in the thread pool)."""
        now = self.clock()
        return [
            r
            for name, room in rooms.items()
            for r in deliveries.claim_due(
                self.engine, [name], now, limit=room, lease=self.wcfg.timeout + 5, exclude=exclude
            )
        ]

    def _deliver(self, row: dict[str, Any]) -> Deferred:
        """One attempt; always fires, with the outcome recorded (any error is this delivery's alone)."""
        self.in_flight[row["id"]] = row["subscription"]
        try:
            d = self._send(row)
        except Exception:
            d = fail()

        delivered = []

        def done(code: int) -> Deferred:
            ok = 200 <= code < 300
            if ok:
                delivered.append(True)
            return self._record(row, ok, code, None if ok else f"HTTP {code}")

        def failed(err: Any) -> Deferred:
            return self._record(row, False, None, describe(err))

        def not_recorded(err: Any) -> None:  # the row stays leased and is tried again after the lease
            log.warning(
                "webhook delivery %s to %s: outcome not recorded: %s", row["id"], row["subscription"], describe(err)
            )

        def settled(result: Any) -> Any:
            self.in_flight.pop(row["id"], None)
            if self.running and (row["subscription"] in self.full or delivered):  # room again, or the next is due
                self.tick(materialise=False)
            return result

        d.addCallbacks(done, failed)
        d.addErrback(not_recorded)
        d.addBoth(settled)
        return d

    def _send(self, row: dict[str, Any]) -> Deferred:
        sub = self.subs[row["subscription"]]
        body = row["payload"].encode("utf-8")
        ts = int(self.clock())
        event_id = json.loads(row["payload"])["id"]
        headers = Headers(
            {
                b"content-type": [b"application/json"],
                b"user-agent": [USER_AGENT],
                HEADER.encode(): [sign(sub.secret, ts, body).encode()],
                b"sidecar-event-id": [event_id.encode()],
                b"sidecar-event-type": [row["event_type"].encode()],
                b"sidecar-delivery-id": [str(row["id"]).encode()],
                b"sidecar-delivery-attempt": [str(row["attempts"] + 1).encode()],
            }
        )
        kept, fresh = self.agents[sub.ca_file]
        d = kept.request(b"POST", sub.url.encode(), headers, Body(body))

        def again(err: Any) -> Any:  # a kept-alive connection the receiver had closed: once more, on a new one
            return fresh.request(b"POST", sub.url.encode(), headers, Body(body)) if closed_before_answer(err) else err

        d.addErrback(again)
        d.addCallback(response_code)
        d.addTimeout(self.wcfg.timeout, self.reactor)
        return d

    def _record(self, row: dict[str, Any], ok: bool, code: int | None, error: str | None) -> Deferred:
        now = self.clock()
        next_at = (
            None
            if ok
            else deliveries.next_attempt(
                row["attempts"] + 1,
                row["created_at"],
                now,
                base=self.backoff_base,
                cap=self.backoff_cap,
                retry_for=self.wcfg.retry_for,
            )
        )
        WEBHOOK_DELIVERIES.labels(row["subscription"], "delivered" if ok else "failed" if next_at else "dead").inc()
        if not ok:
            log.warning(
                "webhook delivery %s to %s failed (attempt %d): %s%s",
                row["id"],
                row["subscription"],
                row["attempts"] + 1,
                error,
                "; dead" if next_at is None else "",
            )
        return self._in_pool(
            deliveries.record_attempt, self.engine, row["id"], now, ok=ok, code=code, error=error, next_at=next_at
        )

    def stopService(self) -> Any:
        d = super().stopService()
        for hpool in self._http_pools:
            hpool.closeCachedConnections()
        return d
