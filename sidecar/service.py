"""makeService(config, reactor): the one place where the parts are wired together."""

from __future__ import annotations

import logging
from typing import Any

from twisted.application import service
from twisted.application.internet import TimerService
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from sidecar.config import Config
from sidecar.http.site import make_site
from sidecar.listeners import Listener, with_backlog
from sidecar.metrics import DB_UP, init_for_config
from sidecar.policy.engine import GuardedDecider, PolicyEngine
from sidecar.policy.limits import RateLimiter
from sidecar.policy.protocol import PolicyFactory
from sidecar.recipient_filters import RecipientRecorder
from sidecar.store.db import make_engine, upgrade
from sidecar.suppression.index import SuppressionIndex
from sidecar.suppression.store import SuppressionStore
from sidecar.sync import StateSync
from sidecar.webhooks import backlog as webhook_backlog

log = logging.getLogger("sidecar.service")


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
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def makeService(cfg: Config, reactor: Any) -> service.MultiService:
    """Build the whole service. Upgrades the schema and loads state (blocking) before returning."""
    return_freed_memory()
    top = service.MultiService()
    init_for_config(cfg)  # series known from the configuration exist from the start
    pool = ThreadPool(minthreads=1, maxthreads=cfg.server.db_threads, name="sidecar-db")
    ThreadPoolService(pool).setServiceParent(top)

    engine = make_engine(cfg.database.url, pool_size=cfg.server.db_threads + 2)
    upgrade(engine)
    store = SuppressionStore(engine, case_sensitive_local=cfg.suppression.local_part_case_sensitive)
    index = SuppressionIndex(cfg.suppression.local_part_case_sensitive, cfg.suppression.allowlist)
    limiter = RateLimiter(cfg.ratelimit.rules)
    rc = cfg.recipients
    recorder = (
        RecipientRecorder(rc.expected_per_day, rc.false_positive_rate, cfg.suppression.local_part_case_sensitive)
        if rc.enabled
        else None
    )
    sync = StateSync(
        cfg, store, engine, reactor, lambda f, *a: deferToThreadPool(reactor, pool, f, *a), index, limiter, recorder
    )
    sync.load()
    sync.setServiceParent(top)
    monitor = None
    if cfg.domains:  # DNS checks in their own threads (docs/domain-health.md); set up before anything listens
        from sidecar.domains.monitor import DomainMonitor

        monitor = DomainMonitor(cfg, engine, reactor, pool)
        monitor.setServiceParent(top)
    DB_UP.set_function(lambda: 1.0 if sync.db_ok else 0.0)
    webhook_backlog.register(engine, cfg)

    rl = cfg.ratelimit
    shared: Any = limiter
    if rl.backend == "redis" and limiter:
        from sidecar.policy.redis_limits import RedisRateLimiter

        shared = RedisRateLimiter(limiter, rl.redis_url, rl.redis_timeout, rl.redis_fallback, reactor)
        reactor.addSystemEventTrigger("before", "shutdown", shared.close)
    reputation = None
    if cfg.reputation.enabled:
        from sidecar.recipients import node_name
        from sidecar.reputation.live import LiveReputation
        from sidecar.reputation.service import ReputationSync

        reputation = LiveReputation(node_name(cfg), cfg.reputation.throttle_factor)
        rsync = ReputationSync(cfg, engine, reactor, lambda f, *a: deferToThreadPool(reactor, pool, f, *a), reputation)
        rsync.load()
        rsync.setServiceParent(top)
    decide = GuardedDecider(
        PolicyEngine(
            cfg, index, shared, sync.refusals, recorder.add if recorder is not None else None, reputation=reputation
        ),
        cfg.server.safe_action,
        reactor.seconds,
    )
    s = cfg.server
    factory = PolicyFactory(
        decide,
        max_line_length=s.max_line_length,
        max_attributes=s.max_attributes,
        max_request_size=s.max_request_size,
        max_connections=s.max_connections,
        request_timeout=s.request_timeout,
        clock=reactor,
    )
    for ep in s.policy:
        Listener(
            "policy listener " + ep, endpoints.serverFromString(reactor, with_backlog(ep)), factory
        ).setServiceParent(top)
    TimerService(min(30.0, s.idle_timeout / 2), factory.sweep_idle, s.idle_timeout).setServiceParent(top)

    def status() -> dict[str, object]:
        return {
            "ready": sync.ready,
            "database": "ok" if sync.db_ok else "unavailable",
            "suppressions": len(index),
            "connections": len(factory.connections),
            "last_change": sync.cursor.high,
        }

    from sidecar.http.api import Api
    from sidecar.webhooks.service import WebhookService

    api = Api(cfg, engine, reactor, pool, limiter=limiter)
    api.domain_monitor = top.domain_monitor = monitor  # type: ignore[attr-defined]
    Listener(
        "HTTP listener " + s.http, endpoints.serverFromString(reactor, s.http), make_site(status, api=api)
    ).setServiceParent(top)

    if cfg.ingest.socket or cfg.ingest.lmtp:
        from sidecar.bounce.group import GroupCommit
        from sidecar.bounce.handoff import HandoffService
        from sidecar.bounce.record import Recorder

        lookup = None
        if recorder is not None:  # this relay's unflushed recipients count too
            from sidecar.recipients import EitherLookup, open_lookup

            lookup = EitherLookup(recorder, open_lookup(cfg, engine))
        # one group commit for both entries: their messages share transactions
        group = GroupCommit(Recorder(cfg, engine, recipients=lookup), reactor, pool)
        if cfg.ingest.socket:
            HandoffService(cfg, engine, reactor, pool, group=group).setServiceParent(top)
        if cfg.ingest.lmtp:
            from sidecar.bounce.lmtp_service import LmtpService

            LmtpService(cfg, reactor, group).setServiceParent(top)
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
