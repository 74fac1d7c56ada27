"""WebhookService: derive deliveries from the feeds and POST them, never blocking the reactor.

Database work runs in the service's thread pool (``deferToThreadPool``); HTTP goes through
Twisted's ``Agent``. Each tick: materialise new deliveries, claim those that are due and
first in line for their address, send them concurrently, record the outcomes; repeat while
there is work. A failure is retried with exponential backoff until ``webhooks.retry_for``
has passed, then the delivery is dead (visible and re-deliverable through API and CLI).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, DeferredList, fail, inlineCallbacks
from twisted.internet.threads import deferToThreadPool
from twisted.web.http_headers import Headers

from sidecar.config import Config
from sidecar.metrics import WEBHOOK_DELIVERIES, WEBHOOK_ERRORS
from sidecar.webhooks import outbox
from sidecar.webhooks.client import Body, describe, make_agent, response_code
from sidecar.webhooks.signing import HEADER, sign

log = logging.getLogger("sidecar.webhooks")
USER_AGENT = b"postfix-sidecar-webhooks/1"


class WebhookService(service.MultiService):
    """Add to the top MultiService: ``WebhookService(cfg, engine, reactor, pool)``."""

    def __init__(self, cfg: Config, engine: Any, reactor: Any, pool: Any, *, backoff_base: float | None = None,
                 backoff_cap: float | None = None, concurrency: int = 20, clock: Callable[[], float] = time.time,
                 agent: Any = None) -> None:
        super().__init__()
        self.cfg, self.engine, self.reactor, self.pool = cfg, engine, reactor, pool
        self.wcfg = cfg.webhooks
        self.subs = {s.name: s for s in outbox.subscriptions(self.wcfg.subscriptions)}
        self.outbox = outbox.Outbox(engine, list(self.subs.values()))
        self.backoff_base = self.wcfg.backoff if backoff_base is None else backoff_base
        self.backoff_cap = self.wcfg.backoff_max if backoff_cap is None else backoff_cap
        self.concurrency = concurrency
        self.clock = clock
        self.in_flight: set[int] = set()
        self.busy = False
        self.ticks = 0
        self.errors = 0
        self.agents: dict[str, Any] = {}   # by CA file ("": the system's trust store)
        self._http_pools: list[Any] = []
        for sub in self.subs.values():
            if agent is not None:
                self.agents[sub.ca_file] = agent
            elif sub.ca_file not in self.agents:
                self.agents[sub.ca_file], hpool = make_agent(reactor, timeout=self.wcfg.timeout,
                                                             concurrency=concurrency, ca_file=sub.ca_file)
                self._http_pools.append(hpool)
        if self.subs:
            TimerService(self.wcfg.poll_interval, self.tick).setServiceParent(self)

    def _in_pool(self, f: Any, *a: Any, **kw: Any) -> Deferred:
        return deferToThreadPool(self.reactor, self.pool, f, *a, **kw)

    def tick(self) -> Deferred | None:
        """One round (skipped if the previous one is still running); errors are logged, retried next tick."""
        if self.busy:
            return None
        self.busy = True
        d = self.run_once()

        def failed(err: Any) -> None:
            self.errors += 1
            WEBHOOK_ERRORS.inc()
            log.warning("webhook dispatch failed (will retry): %s", err.getErrorMessage())

        d.addErrback(failed)
        d.addBoth(lambda _: setattr(self, "busy", False))
        return d

    @inlineCallbacks
    def run_once(self, max_rounds: int = 50) -> Any:
        """Materialise, then send due deliveries until none is left (or ``max_rounds``)."""
        self.ticks += 1
        yield self._in_pool(self.outbox.materialise, self.clock())
        for name, error in self.outbox.failures.items():   # that subscription catches up next round
            self.errors += 1
            WEBHOOK_ERRORS.inc()
            log.warning("webhook deliveries for %s not derived (will retry): %s", name, error)
        sent = 0
        for _ in range(max_rounds):
            rows = yield self._in_pool(outbox.claim_due, self.engine, list(self.subs), self.clock(),
                                       limit=self.concurrency, lease=self.wcfg.timeout + 5,
                                       exclude=set(self.in_flight))
            if not rows:
                break
            yield DeferredList([self._deliver(r) for r in rows], consumeErrors=True)
            sent += len(rows)
        return sent

    def _deliver(self, row: dict[str, Any]) -> Deferred:
        """One attempt; always fires, with the outcome recorded (any error is this delivery's alone)."""
        self.in_flight.add(row["id"])
        try:
            d = self._send(row)
        except Exception:   # noqa: BLE001 - e.g. https without TLS support: recorded like any failure
            d = fail()

        def done(code: int) -> Deferred:
            ok = 200 <= code < 300
            return self._record(row, ok, code, None if ok else f"HTTP {code}")

        def failed(err: Any) -> Deferred:
            return self._record(row, False, None, describe(err))

        def settled(result: Any) -> Any:
            self.in_flight.discard(row["id"])
            return result

        d.addCallbacks(done, failed)
        d.addBoth(settled)
        return d

    def _send(self, row: dict[str, Any]) -> Deferred:
        sub = self.subs[row["subscription"]]
        body = row["payload"].encode("utf-8")
        ts = int(self.clock())
        event_id = json.loads(row["payload"])["id"]
        headers = Headers({b"content-type": [b"application/json"], b"user-agent": [USER_AGENT],
                           HEADER.encode(): [sign(sub.secret, ts, body).encode()],
                           b"sidecar-event-id": [event_id.encode()],
                           b"sidecar-event-type": [row["event_type"].encode()],
                           b"sidecar-delivery-id": [str(row["id"]).encode()],
                           b"sidecar-delivery-attempt": [str(row["attempts"] + 1).encode()]})
        d = self.agents[sub.ca_file].request(b"POST", sub.url.encode(), headers, Body(body))
        d.addCallback(response_code)
        d.addTimeout(self.wcfg.timeout, self.reactor)
        return d

    def _record(self, row: dict[str, Any], ok: bool, code: int | None, error: str | None) -> Deferred:
        now = self.clock()
        next_at = None if ok else outbox.next_attempt(row["attempts"] + 1, row["created_at"], now,
                                                      base=self.backoff_base, cap=self.backoff_cap,
                                                      retry_for=self.wcfg.retry_for)
        WEBHOOK_DELIVERIES.labels(row["subscription"], "delivered" if ok else "failed" if next_at else "dead").inc()
        if not ok:
            log.warning("webhook delivery %s to %s failed (attempt %d): %s%s", row["id"], row["subscription"],
                     row["attempts"] + 1, error, "; dead" if next_at is None else "")
        return self._in_pool(outbox.record_attempt, self.engine, row["id"], now, ok=ok, code=code, error=error,
                             next_at=next_at)

    def stopService(self) -> Any:
        d = super().stopService()
        for hpool in self._http_pools:
            hpool.closeCachedConnections()
        return d
