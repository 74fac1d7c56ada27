"""StateSync: the service's periodic jobs keeping the in-memory index and counters in step with the database.

Reads the change feed (suppressions added elsewhere, rate-limit resets), saves rate-limit counters,
refusals and the record of recipients, prunes old rows, and drops expired state. Database work
runs through ``run_in_pool`` (the service's thread pool); time comes from ``clock`` (the reactor,
or a ``task.Clock`` in tests).
"""

from __future__ import annotations

import gc
import itertools
import logging
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

from sqlalchemy import Engine
from twisted.application import service
from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Cooperator, SchedulerStopped

from sidecar import metrics
from sidecar.config import Config
from sidecar.policy.limits import RateLimiter
from sidecar.policy.refusals import RefusalLog, write_refusals
from sidecar.recipient_filters import RecipientRecorder
from sidecar.recipients import node_name
from sidecar.store import counters, recipient_days, retention
from sidecar.suppression.changefeed import ChangeCursor
from sidecar.suppression.index import SuppressionIndex
from sidecar.suppression.interface import SuppressionSource

log = logging.getLogger("sidecar.service")
CHANGE_BATCH = 50000
PRUNE_SLICE = 2000  # rate-limit keys looked at per reactor turn by housekeeping (~1 ms)
FLUSH_TURN = 0.001  # seconds of a reactor turn the recipients flush may hash for


class StateSync(service.MultiService):
    """Keeps the in-memory index and counters in step with the database."""

    def __init__(
        self,
        cfg: Config,
        store: SuppressionSource,
        engine: Engine,
        clock: IReactorTime,
        run_in_pool: Callable[..., Deferred],
        index: SuppressionIndex,
        limiter: RateLimiter,
        recorder: RecipientRecorder | None = None,
    ) -> None:
        super().__init__()
        self.cfg, self.store, self.engine, self.clock = cfg, store, engine, clock
        self._in_pool = run_in_pool
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
        self._flushing: dict[int, set[tuple[str, str]]] | None = None  # a flush's days not applied yet
        self._cooperator = Cooperator(
            terminationPredicateFactory=lambda: _Budget(FLUSH_TURN),
            scheduler=lambda f: clock.callLater(0, f),
        )
        self._every(cfg.database.sync_interval, self._guard, "changes", self.poll_changes)
        self._every(cfg.ratelimit.persist_interval, self._guard, "counters", self.save_counters)
        self._every(5.0, self._guard, "refusals", self.save_refusals)
        if recorder is not None:
            self._every(cfg.recipients.flush_interval, self._guard, "recipients", self.flush_recipients)
        self._every(30.0, self.housekeeping)
        self._every(3600.0, self._guard, "retention", self.prune_old)

    def _every(self, seconds: float, f: Callable[..., Any], *args: Any) -> None:
        timer = TimerService(seconds, f, *args)
        timer.clock = self.clock
        timer.setServiceParent(self)

    def load(self) -> None:
        """Blocking initial load, before any listener starts."""
        t0 = self.clock.seconds()
        now = self.clock.seconds()
        last_change = self.store.last_change_id()
        # Re-read the last changes: a transaction in flight during the load may commit a smaller id.
        self.cursor = ChangeCursor(max(0, last_change - 1000))
        # Streamed in batches straight into the index: the rows never sit in memory all at once.
        self.index.put_many(itertools.chain.from_iterable(self.store.iter_active(now)))
        n = self.limiter.load(counters.load_counters(self.engine, now), now) if self.limiter else 0
        metrics.SUPPRESSIONS.set(len(self.index))
        metrics.CHANGE_FEED_LAG.set(last_change)
        # What start-up built lives as long as the process: keep the cyclic GC from walking it.
        gc.collect()
        gc.freeze()
        self.ready = True
        log.info(
            "loaded %d suppressions and %d rate-limit counters in %.2fs", len(self.index), n, self.clock.seconds() - t0
        )

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
            fresh = self.cursor.accept(rows, self.clock.seconds())
            for _cid, kind, address, tenant, active, reason, created, expires in fresh:
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
        now = self.clock.seconds()
        keys = self.limiter.take_dirty_keys()
        if not keys:
            return Deferred.fromCoroutine(_noop())
        limiter, engine = self.limiter, self.engine

        def save() -> None:
            counters.save_counters(engine, limiter.dirty_items(keys, now), now)

        d = self._in_pool(save)

        def requeue(err: Any) -> Any:  # keep them dirty: nothing forgotten
            limiter.mark_dirty(keys)
            return err

        d.addErrback(requeue)
        return d

    def save_refusals(self) -> Deferred:
        rows = self.refusals.take_completed(self.clock.seconds())
        if not rows:
            return Deferred.fromCoroutine(_noop())
        d = self._in_pool(write_refusals, self.engine, rows)

        def put_back(err: Any) -> Any:
            self.refusals.put_back(rows)
            return err

        d.addErrback(put_back)
        return d

    @inlineCallbacks
    def flush_recipients(self) -> Any:
        """Take the pending recipients (O(1)); hash them into the day filters on the reactor, a
        slice at a time (:meth:`RecipientRecorder.apply_steps` through a Cooperator that gives each
        turn ~1 ms: done whole, in the pool or here, a flush of 15,000 pairs held every policy
        request up for ~70 ms, the GIL being one); then the pool writes the changed filters.
        Pairs not applied when something fails are put back; a filter that failed to save stays
        dirty and is written next time."""
        rec = self.recorder
        assert rec is not None
        now = self.clock.seconds()
        pending = rec.take()
        if not pending and not any(f.dirty for f in rec.filters.values()):
            return
        engine, node = self.engine, self.node
        self._flushing = pending
        added = 0
        try:
            for day in sorted(pending):
                stored = None
                if day not in rec.filters:
                    stored = yield self._in_pool(recipient_days.stored_bits, engine, node, day)
                counted: list[int] = []
                yield self._cooperator.cooperate(
                    _collect(rec.apply_steps(day, pending[day], stored), counted)
                ).whenDone()
                del pending[day]
                added += counted[0]
            yield self._in_pool(recipient_days.save_dirty, engine, rec, node, now)
        except SchedulerStopped:  # stopping: the last flush at stopService takes them
            rec.put_back(pending)
            return
        except Exception:
            rec.put_back(pending)  # the days not hashed in yet
            raise
        finally:
            self._flushing = None
        metrics.RECIPIENT_RECORD_ADDS.inc(added)
        metrics.RECIPIENT_RECORD_BYTES.set(rec.size_bytes())
        metrics.RECIPIENT_RECORD_ITEMS.set(rec.items_today(now))

    def prune_old(self) -> Deferred:
        # The record's old days too (also once recording is turned off: they still leave the store).
        self._in_pool(
            recipient_days.prune, self.engine, self.clock.seconds(), self.cfg.recipients.retention
        ).addErrback(lambda err: log.warning("pruning the record of recipients failed: %s", err.getErrorMessage()))
        d = self._in_pool(retention.prune, self.engine, self.clock.seconds(), self.cfg.ingest.retention_days)

        def done(counts: tuple[int, int]) -> None:
            if any(counts):
                log.info(
                    "retention: pruned %d events and %d raw messages older than %d days",
                    *counts,
                    self.cfg.ingest.retention_days,
                )

        return d.addCallback(done)

    def housekeeping(self) -> None:
        """Drop expired suppressions (only those: a heap) and idle rate-limit keys (a slice per reactor turn)."""
        now = self.clock.seconds()
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
        self._prune_call = self.clock.callLater(0, self._prune_step)

    def stopService(self) -> Any:
        d = super().stopService()
        if self._prune_call is not None and self._prune_call.active():
            self._prune_call.cancel()
        self._pruning = None
        if self.recorder is not None:
            self._cooperator.stop()  # a flush cut short puts back the pairs it had not hashed in yet
            if self._flushing is not None:  # ... unless it waits for the pool
                self.recorder.put_back(self._flushing)
                self._flushing = None
            try:  # last flush, synchronously (the pool may be stopped already)
                recipient_days.flush(self.engine, self.recorder, self.node, self.recorder.take(), self.clock.seconds())
            except Exception as e:
                log.warning("could not save the record of recipients at shutdown: %s", e)
        if self.limiter and self.limiter.dirty:
            try:  # last save, synchronously: we are shutting down anyway
                now = self.clock.seconds()
                counters.save_counters(self.engine, self.limiter.take_dirty(now), now)
            except Exception as e:
                log.warning("could not save rate-limit counters at shutdown: %s", e)
        return d


def _collect(steps: Generator[None, None, int], out: list[int]) -> Iterator[None]:
    """``steps`` for a Cooperator; its return value appended to ``out``."""
    out.append((yield from steps))


class _Budget:
    """A Cooperator's termination predicate: true once ``seconds`` of this turn have passed."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def __call__(self) -> bool:
        return time.perf_counter() >= self.end


async def _noop() -> None:
    return None
