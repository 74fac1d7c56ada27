"""makeService(config, reactor): the one place where the parts are wired together."""

from __future__ import annotations

import gc
import itertools
import logging
import time
from collections.abc import Iterator
from typing import Any

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from sidecar import metrics
from sidecar.config import Config
from sidecar.errors import one_line
from sidecar.http.site import make_site
from sidecar.policy.engine import GuardedDecider, PolicyEngine
from sidecar.policy.limits import RateLimiter
from sidecar.policy.protocol import PolicyFactory
from sidecar.policy.refusals import RefusalLog, write_refusals
from sidecar.recipient_filters import RecipientRecorder
from sidecar.recipients import node_name
from sidecar.store import counters, recipient_days, retention
from sidecar.store.db import make_engine, upgrade
from sidecar.suppression.changefeed import ChangeCursor
from sidecar.suppression.index import SuppressionIndex
from sidecar.suppression.store import SuppressionStore

log = logging.getLogger("sidecar.service")
CHANGE_BATCH = 50000
PRUNE_SLICE = 2000   # rate-limit keys looked at per reactor turn by housekeeping (~1 ms)


class ThreadPoolService(service.Service):
    """The bounded pool where all database work runs; the reactor never waits on it."""

    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()


class Listener(StreamServerEndpointService):
    """A listener that fails start-up at once (not later, in a Deferred) and names itself in the error."""

    def __init__(self, what: str, endpoint: Any, factory: Any) -> None:
        super().__init__(endpoint, factory)
        self.what = what
        self._raiseSynchronously = True

    def privilegedStartService(self) -> None:  # noqa: N802 - Twisted API
        try:
            super().privilegedStartService()
        except Exception as e:
            raise StartupError(f"{self.what}: {one_line(e)}") from None


class StartupError(RuntimeError):
    """A part of the service could not start (the message names it)."""


class StateSync(service.MultiService):
    """Keeps the in-memory index and counters in step with the database."""

    def __init__(self, cfg: Config, store: SuppressionStore, reactor: Any, pool: ThreadPool,
                 index: SuppressionIndex, limiter: RateLimiter, recorder: RecipientRecorder | None = None) -> None:
        super().__init__()
        self.cfg, self.store, self.reactor, self.pool = cfg, store, reactor, pool
        self.index, self.limiter, self.recorder = index, limiter, recorder
        self.node = node_name(cfg)
        # Read at scrape time: the key count moves with every new key, not with the 30 s prune.
        metrics.RATELIMIT_KEYS.set_function(lambda: len(limiter.state))
        self.refusals = RefusalLog()
        self.cursor = ChangeCursor()
        self.ready = False
        self.db_ok = True
        self._busy: set[str] = set()
        self._pruning: Iterator[int] | None = None
        self._prune_call: Any = None
        TimerService(cfg.database.sync_interval, self._guard, "changes", self.poll_changes).setServiceParent(self)
        TimerService(cfg.ratelimit.persist_interval, self._guard, "counters", self.save_counters
                     ).setServiceParent(self)
        TimerService(5.0, self._guard, "refusals", self.save_refusals).setServiceParent(self)
        if recorder is not None:
            TimerService(cfg.recipients.flush_interval, self._guard, "recipients", self.flush_recipients
                         ).setServiceParent(self)
        TimerService(30.0, self.housekeeping).setServiceParent(self)
        TimerService(3600.0, self._guard, "retention", self.prune_old).setServiceParent(self)

    def load(self) -> None:
        """Blocking initial load, before any listener starts."""
        t0 = time.monotonic()
        now = time.time()
        last_change = self.store.last_change_id()
        # Re-read the last changes: a transaction in flight during the load may commit a smaller id.
        self.cursor = ChangeCursor(max(0, last_change - 1000))
        # Streamed in batches straight into the index: the rows never sit in memory all at once.
        self.index.put_many(itertools.chain.from_iterable(self.store.iter_active(now)))
        n = self.limiter.load(counters.load_counters(self.store.engine, now), now) if self.limiter else 0
        metrics.SUPPRESSIONS.set(len(self.index))
        metrics.CHANGE_FEED_LAG.set(last_change)
        # What start-up built lives as long as the process: keep the cyclic GC from walking it.
        gc.collect()
        gc.freeze()
        self.ready = True
        log.info("loaded %d suppressions and %d rate-limit counters in %.2fs", len(self.index), n,
                 time.monotonic() - t0)

    def _in_pool(self, f: Any, *a: Any) -> Deferred:
        return deferToThreadPool(self.reactor, self.pool, f, *a)

    def _guard(self, name: str, f: Any) -> Deferred | None:
        """Run one periodic job at a time; a database error is logged, counted, and retried next tick."""
        if name in self._busy:
            return None
        self._busy.add(name)
        d = f()

        def failed(err: Any) -> None:
            self.db_ok = False
            metrics.DB_ERRORS.labels(name).inc()
            log.warning("database %s sync failed (serving from memory): %s", name, err.getErrorMessage())

        d.addCallbacks(lambda _: setattr(self, "db_ok", True), failed)
        d.addBoth(lambda _: self._busy.discard(name))
        return None

    @inlineCallbacks
    def poll_changes(self) -> Any:
        after = self.cursor.low
        while True:
            rows = yield self._in_pool(self.store.changes_since, after)
            for _cid, kind, address, tenant, active, reason, created, expires in self.cursor.accept(rows, time.time()):
                if kind == "suppression":
                    self.index.apply(address, tenant, active, reason, created, expires)
                elif kind == "limit-reset":
                    self.limiter.reset(address)
            if rows:
                metrics.SUPPRESSIONS.set(len(self.index))
                metrics.CHANGE_FEED_LAG.set(self.cursor.high)
            if len(rows) < CHANGE_BATCH:
                return
            after = rows[-1][0]

    def save_counters(self) -> Deferred:
        """Swap the dirty-key set out (O(1) on the reactor); the database thread reads their TATs and saves."""
        now = time.time()
        keys = self.limiter.take_dirty_keys()
        if not keys:
            return Deferred.fromCoroutine(_noop())
        limiter, engine = self.limiter, self.store.engine

        def save() -> None:
            counters.save_counters(engine, limiter.dirty_items(keys, now), now)

        d = self._in_pool(save)

        def requeue(err: Any) -> Any:  # keep them dirty: nothing forgotten
            limiter.mark_dirty(keys)
            return err

        d.addErrback(requeue)
        return d

    def save_refusals(self) -> Deferred:
        rows = self.refusals.take_completed(time.time())
        if not rows:
            return Deferred.fromCoroutine(_noop())
        d = self._in_pool(write_refusals, self.store.engine, rows)

        def put_back(err: Any) -> Any:
            self.refusals.put_back(rows)
            return err

        d.addErrback(put_back)
        return d

    def flush_recipients(self) -> Deferred:
        """Take the pending recipients (O(1) on the reactor); the pool hashes them into the day
        filters and writes the changed filters. Pairs a failed flush did not apply are put back;
        a filter that failed to save stays dirty and is written next time."""
        rec = self.recorder
        assert rec is not None
        now = time.time()
        pending = rec.take()
        if not pending and not any(f.dirty for f in rec.filters.values()):
            return Deferred.fromCoroutine(_noop())
        engine, node = self.store.engine, self.node

        def work() -> int:
            return recipient_days.flush(engine, rec, node, pending, now)

        def done(n: int) -> None:
            metrics.RECIPIENT_RECORD_ADDS.inc(n)
            metrics.RECIPIENT_RECORD_BYTES.set(rec.size_bytes())
            metrics.RECIPIENT_RECORD_ITEMS.set(rec.items_today(now))

        def failed(err: Any) -> Any:
            rec.put_back(pending)   # the days not hashed in yet (flush removes those it applied)
            return err

        return self._in_pool(work).addCallbacks(done, failed)

    def prune_old(self) -> Deferred:
        # The record's old days too (also once recording is turned off: they still leave the store).
        self._in_pool(recipient_days.prune, self.store.engine, time.time(), self.cfg.recipients.retention
                      ).addErrback(lambda err: log.warning("pruning the record of recipients failed: %s",
                                                            err.getErrorMessage()))
        d = self._in_pool(retention.prune, self.store.engine, time.time(), self.cfg.ingest.retention_days)

        def done(counts: tuple[int, int]) -> None:
            if any(counts):
                log.info("retention: pruned %d events and %d raw messages older than %d days", *counts,
                         self.cfg.ingest.retention_days)

        return d.addCallback(done)

    def housekeeping(self) -> None:
        """Drop expired suppressions (only those: a heap) and idle rate-limit keys (a slice per reactor turn)."""
        now = time.time()
        self.index.prune_expired(now)
        metrics.SUPPRESSIONS.set(len(self.index))
        if self.limiter and self._pruning is None:
            self._pruning = self.limiter.prune_steps(now, PRUNE_SLICE)
            self._prune_step()

    def _prune_step(self) -> None:
        if self._pruning is None:
            return
        if next(self._pruning, None) is None:
            self._pruning = None
            return
        self._prune_call = self.reactor.callLater(0, self._prune_step)

    def stopService(self) -> Any:
        d = super().stopService()
        if self._prune_call is not None and self._prune_call.active():
            self._prune_call.cancel()
        self._pruning = None
        if self.recorder is not None:
            try:   # last flush, synchronously (the pool may be stopped already)
                recipient_days.flush(self.store.engine, self.recorder, self.node, self.recorder.take(), time.time())
            except Exception as e:  # noqa: BLE001
                log.warning("could not save the record of recipients at shutdown: %s", e)
        if self.limiter and self.limiter.dirty:
            try:   # last save, synchronously: we are shutting down anyway
                now = time.time()
                counters.save_counters(self.store.engine, self.limiter.take_dirty(now), now)
            except Exception as e:  # noqa: BLE001
                log.warning("could not save rate-limit counters at shutdown: %s", e)
        return d


async def _noop() -> None:
    return None


def return_freed_memory() -> None:
    """Have glibc give large buffers back to the system when they are freed.

    By default glibc raises its mmap threshold after a large block is freed, so the next
    10 MB messages (hand-offs, API bodies) come from the heap, which is rarely returned: the
    service kept ~50 MB after three 10 MB hand-offs. A fixed threshold (which also turns the
    dynamic one off) keeps every block over 128 KiB in its own mapping, unmapped on free.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 128 * 1024)   # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def makeService(cfg: Config, reactor: Any) -> service.MultiService:
    """Build the whole service. Upgrades the schema and loads state (blocking) before returning."""
    return_freed_memory()
    top = service.MultiService()
    pool = ThreadPool(minthreads=1, maxthreads=cfg.server.db_threads, name="sidecar-db")
    ThreadPoolService(pool).setServiceParent(top)

    engine = make_engine(cfg.database.url, pool_size=cfg.server.db_threads + 2)
    upgrade(engine)
    store = SuppressionStore(engine, case_sensitive_local=cfg.suppression.local_part_case_sensitive)
    index = SuppressionIndex(cfg.suppression.local_part_case_sensitive, cfg.suppression.allowlist)
    limiter = RateLimiter(cfg.ratelimit.rules)
    rc = cfg.recipients
    recorder = (RecipientRecorder(rc.expected_per_day, rc.false_positive_rate,
                                  cfg.suppression.local_part_case_sensitive) if rc.enabled else None)
    sync = StateSync(cfg, store, reactor, pool, index, limiter, recorder)
    sync.load()
    sync.setServiceParent(top)

    rl = cfg.ratelimit
    shared: Any = limiter
    if rl.backend == "redis" and limiter:
        from sidecar.policy.redis_limits import RedisRateLimiter

        shared = RedisRateLimiter(limiter, rl.redis_url, rl.redis_timeout, rl.redis_fallback, reactor)
        reactor.addSystemEventTrigger("before", "shutdown", shared.close)
    decide = GuardedDecider(PolicyEngine(cfg, index, shared, sync.refusals,
                                         recorder.add if recorder is not None else None),
                            cfg.server.safe_action, reactor.seconds)
    s = cfg.server
    factory = PolicyFactory(decide, max_line_length=s.max_line_length, max_attributes=s.max_attributes,
                            max_request_size=s.max_request_size, max_connections=s.max_connections,
                            request_timeout=s.request_timeout, clock=reactor)
    for ep in s.policy:
        Listener("policy listener " + ep, endpoints.serverFromString(reactor, _with_backlog(ep)), factory
                 ).setServiceParent(top)
    TimerService(min(30.0, s.idle_timeout / 2), factory.sweep_idle, s.idle_timeout).setServiceParent(top)

    def status() -> dict[str, object]:
        return {"ready": sync.ready, "database": "ok" if sync.db_ok else "unavailable",
                "suppressions": len(index), "connections": len(factory.connections),
                "last_change": sync.cursor.high}

    from sidecar.http.api import Api
    from sidecar.webhooks.service import WebhookService

    api = Api(cfg, engine, reactor, pool, limiter=limiter)
    Listener("HTTP listener " + s.http, endpoints.serverFromString(reactor, s.http), make_site(status, api=api)
             ).setServiceParent(top)

    if cfg.ingest.socket:
        try:
            from sidecar.bounce.handoff import HandoffService
        except ImportError:  # pragma: no cover - during development
            log.warning("ingest hand-off not available")
        else:
            lookup = None
            if recorder is not None:   # this relay's unflushed recipients count too
                from sidecar.recipients import EitherLookup, open_lookup

                lookup = EitherLookup(recorder, open_lookup(cfg, engine))
            HandoffService(cfg, engine, reactor, pool, recipients=lookup).setServiceParent(top)
    WebhookService(cfg, engine, reactor, pool).setServiceParent(top)
    top.sync = sync  # type: ignore[attr-defined]
    top.policy_factory = factory  # type: ignore[attr-defined]
    return top


def stop_started(top: service.MultiService) -> Deferred:
    """Stop the children of ``top`` that started (in reverse order) after a failed start-up.

    The failing child itself may raise while stopping; every error is swallowed: the process
    is leaving, and each listener that did open is closed either way.
    """
    from twisted.internet.defer import DeferredList, maybeDeferred

    running = [s for s in reversed(list(top)) if s.running]
    top.running = False
    return DeferredList([maybeDeferred(s.stopService) for s in running], consumeErrors=True)


def _with_backlog(endpoint: str) -> str:
    """A deep listen backlog: a burst of new smtpd connections must not stall."""
    if endpoint.startswith(("tcp:", "tcp6:", "unix:")) and "backlog=" not in endpoint:
        return endpoint + ":backlog=1024"
    return endpoint
