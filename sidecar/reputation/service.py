"""The service's reputation jobs: write pending sends, re-read levels, evaluate, prune.

Database work runs through ``run_in_pool``; the reactor only swaps dicts. A failed write puts
its rows back for the next round; a failed read keeps the levels in memory as they are.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from twisted.application import service
from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from sidecar import metrics
from sidecar.recipients import node_name
from sidecar.reputation import store
from sidecar.reputation.evaluate import Evaluation, evaluate_all
from sidecar.reputation.levels import LevelMachine, level_name
from sidecar.reputation.live import LiveReputation

log = logging.getLogger("sidecar.reputation")


class ReputationSync(service.MultiService):
    def __init__(
        self,
        cfg: Any,
        engine: Engine,
        clock: IReactorTime,
        run_in_pool: Callable[..., Deferred],
        live: LiveReputation,
    ) -> None:
        super().__init__()
        self.rc = cfg.reputation
        self.engine, self.clock, self._in_pool, self.live = engine, clock, run_in_pool, live
        self.machine = LevelMachine(self.rc)
        self.node = node_name(cfg)
        self._busy: set[str] = set()
        self._every(self.rc.sync_interval, "reputation-sync", self.sync)
        self._every(self.rc.evaluate_interval, "reputation-evaluate", self.evaluate)
        self._every(3600.0, "reputation-prune", self.prune)

    def _every(self, seconds: float, name: str, f: Callable[[], Deferred]) -> None:
        timer = TimerService(seconds, self._guard, name, f)
        timer.clock = self.clock
        timer.setServiceParent(self)

    def _guard(self, name: str, f: Callable[[], Deferred]) -> None:
        if name in self._busy:
            return
        self._busy.add(name)

        def failed(err: Any) -> None:
            metrics.DB_ERRORS.labels(name).inc()
            log.warning("%s failed (retried next round): %s", name, err.getErrorMessage())

        f().addErrback(failed).addBoth(lambda _: self._busy.discard(name))

    def load(self) -> None:
        """Blocking first read of the levels, before any listener starts."""
        self.live.levels = store.levels(self.engine)

    def sync(self) -> Deferred:
        """Write pending sends and queue ids, then re-read the levels."""
        counts, messages = self.live.take()
        live = self.live
        d: Deferred[Any] = (
            self._in_pool(store.save, self.engine, counts, messages) if counts or messages else succeed(None)
        )

        def put_back(err: Any) -> Any:
            live.put_back(counts, messages)
            return err

        d.addErrback(put_back)
        d.addCallback(lambda _: self._in_pool(store.levels, self.engine))
        d.addCallback(self._set_levels)
        return d

    def _set_levels(self, levels: Any) -> None:
        self.live.levels = levels  # replaced whole: the policy path reads one dict

    def evaluate(self) -> Deferred:
        d = self._in_pool(evaluate_all, self.engine, self.machine, self.clock.seconds())
        return d.addCallback(self._evaluated)

    def _evaluated(self, ev: Evaluation) -> Deferred:
        for c in ev.changes:
            log.warning(
                "reputation: tenant %r level %d (%s) -> %d (%s): %s",
                c.tenant,
                c.before,
                level_name(c.before),
                c.after,
                level_name(c.after),
                c.reason,
            )
        publish(ev, self.rc.metrics_top)
        d = self._in_pool(store.held_summary, self.engine, self.node)
        d.addCallback(self._held)
        d.addCallback(lambda _: self._in_pool(store.levels, self.engine))
        return d.addCallback(self._set_levels)

    def _held(self, summary: tuple[int, float | None]) -> None:
        count, oldest = summary
        metrics.REPUTATION_HELD_NOW.set(count)
        metrics.REPUTATION_HELD_OLDEST.set(max(0.0, self.clock.seconds() - oldest) if oldest is not None else 0.0)

    def prune(self) -> Deferred:
        return self._in_pool(store.prune, self.engine, self.clock.seconds(), self.rc.retention)

    def stopService(self) -> Any:
        d = super().stopService()
        counts, messages = self.live.take()
        if counts or messages:
            try:  # last write, synchronously: we are shutting down anyway
                store.save(self.engine, counts, messages)
            except Exception as e:
                log.warning("could not save reputation counts at shutdown: %s", e)
        return d


def publish(ev: Evaluation, top: int) -> None:
    """Level and rate gauges for the tenants above normal and the ``top`` busiest others."""
    above = {t: v for t, v in ev.seen.items() if v[0] > 1}
    if top:
        rest = ((a.sends, t) for t, (lv, a) in ev.seen.items() if lv == 1)
        for _, t in heapq.nlargest(top, rest):
            above[t] = ev.seen[t]
    metrics.REPUTATION_LEVEL.clear()
    metrics.REPUTATION_RATE.clear()
    for t, (level, a) in above.items():
        metrics.REPUTATION_LEVEL.labels(t).set(level)
        if a.bounce_rate is not None:
            metrics.REPUTATION_RATE.labels(t, "bounce").set(a.bounce_rate)
        if a.complaint_rate is not None:
            metrics.REPUTATION_RATE.labels(t, "complaint").set(a.complaint_rate)
