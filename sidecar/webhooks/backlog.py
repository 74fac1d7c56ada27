"""Webhook backlog on /metrics: pending deliveries, the oldest one's age, dead letters.

Read at scrape time (scrapes run in a worker thread, never on the reactor) with one grouped
query on the ``(status, next_attempt_at)`` index; a failed read leaves the families out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from sqlalchemy import Engine, func, select

from sidecar.store.models import WebhookDelivery

D = WebhookDelivery.__table__.c
log = logging.getLogger("sidecar.webhooks")


def backlog(engine: Engine) -> list[tuple[str, str, int, float | None]]:
    """(subscription, status, count, oldest created_at) for pending and dead deliveries."""
    q = (
        select(D.subscription, D.status, func.count(), func.min(D.created_at))
        .where(D.status.in_(("pending", "dead")))
        .group_by(D.subscription, D.status)
    )
    with engine.connect() as conn:
        return [(s, st, int(n), t) for s, st, n, t in conn.execute(q)]


class BacklogCollector:
    """``sidecar_webhook_pending``, ``sidecar_webhook_pending_oldest_seconds``, ``sidecar_webhook_dead_letters``."""

    def __init__(self, read: Callable[[], list[tuple[str, str, int, float | None]]], subscriptions: list[str]) -> None:
        self.read, self.subscriptions = read, subscriptions

    def collect(self) -> Iterator[Metric]:
        try:
            rows = self.read()
        except Exception as e:  # the database is down: sidecar_db_up says so
            log.debug("webhook backlog not read: %s", e)
            return
        pending = GaugeMetricFamily(
            "sidecar_webhook_pending", "Webhook deliveries waiting to be sent, by subscription", labels=["subscription"]
        )
        oldest = GaugeMetricFamily(
            "sidecar_webhook_pending_oldest_seconds",
            "Age of the oldest waiting webhook delivery, by subscription (0: none waiting)",
            labels=["subscription"],
        )
        dead = GaugeMetricFamily(
            "sidecar_webhook_dead_letters",
            "Webhook deliveries given up (dead letters, until re-delivered), by subscription",
            labels=["subscription"],
        )
        now = time.time()
        seen: dict[tuple[str, str], tuple[int, float | None]] = {(s, st): (n, t) for s, st, n, t in rows}
        for sub in sorted(set(self.subscriptions) | {s for s, _ in seen}):
            n, t = seen.get((sub, "pending"), (0, None))
            pending.add_metric([sub], n)
            oldest.add_metric([sub], max(0.0, now - t) if t is not None else 0.0)
            dead.add_metric([sub], seen.get((sub, "dead"), (0, None))[0])
        yield from (pending, oldest, dead)


_registered: list[BacklogCollector] = []


def register(engine: Engine, cfg: Any) -> None:
    """Serve the backlog of ``engine``'s deliveries on the default registry (once per process)."""
    from prometheus_client import REGISTRY

    from sidecar.webhooks.outbox import subscriptions

    names = [s.name for s in subscriptions(cfg.webhooks.subscriptions)]
    if _registered:
        _registered[0].read, _registered[0].subscriptions = (lambda: backlog(engine)), names
        return
    _registered.append(BacklogCollector(lambda: backlog(engine), names))
    REGISTRY.register(_registered[0])  # type: ignore[arg-type]
