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
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.threads import deferToThreadPool
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from sidecar.metrics import WEBHOOK_DELIVERIES, WEBHOOK_ERRORS
from sidecar.config import Config
from sidecar.webhooks import outbox
from sidecar.webhooks.signing import HEADER, sign

log = logging.getLogger("sidecar.webhooks")
USER_AGENT = b"postfix-sidecar-webhooks/1"


@implementer(IBodyProducer)
class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Deferred:
        consumer.write(self.data)
        return Deferred.fromCoroutine(_noop())

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


async def _noop() -> None:
    return None


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
        if agent is None:
            hpool = HTTPConnectionPool(reactor, persistent=True)
            hpool.maxPersistentPerHost = concurrency
            agent = Agent(reactor, connectTimeout=self.wcfg.timeout, pool=hpool)
            self._http_pool: Any = hpool
        else:
            self._http_pool = None
        self.agent = agent
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
        self.in_flight.add(row["id"])
        d = self.agent.request(b"POST", sub.url.encode(), headers, _Body(body))
        d.addCallback(lambda resp: readBody(resp).addCallback(lambda _b: resp.code))
        d.addTimeout(self.wcfg.timeout, self.reactor)

        def done(code: int) -> Deferred:
            ok = 200 <= code < 300
            return self._record(row, ok, code, None if ok else f"HTTP {code}")

        def failed(err: Any) -> Deferred:
            return self._record(row, False, None, f"{err.type.__name__}: {err.getErrorMessage()}"[:500])

        d.addCallbacks(done, failed)
        def settled(result: Any) -> Any:
            self.in_flight.discard(row["id"])
            return result

        d.addBoth(settled)
        return d

    def _record(self, row: dict[str, Any], ok: bool, code: int | None, error: str | None) -> Deferred:
        now = self.clock()
        next_at = None if ok else outbox.next_attempt(row["attempts"] + 1, row["created_at"], now,
                                                      base=self.backoff_base, cap=self.backoff_cap,
                                                      retry_for=self.wcfg.retry_for)
        WEBHOOK_DELIVERIES.labels(row["subscription"], "delivered" if ok else "failed" if next_at else "dead").inc()
        if not ok:
            log.info("webhook delivery %s to %s failed (attempt %d): %s%s", row["id"], row["subscription"],
                     row["attempts"] + 1, error, "; dead" if next_at is None else "")
        return self._in_pool(outbox.record_attempt, self.engine, row["id"], now, ok=ok, code=code, error=error,
                             next_at=next_at)

    def stopService(self) -> Any:
        d = super().stopService()
        if self._http_pool is not None:
            self._http_pool.closeCachedConnections()
        return d
