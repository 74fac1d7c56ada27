"""Group commit for the hand-off service: messages that arrive while a transaction is being
written are recorded together, in the next one.

One group at a time runs in the database thread pool: the duplicate check for all its messages
in one query, each message parsed and assessed outside the transaction, then ONE write
transaction for all of them. Each client is answered only after that commit, so "exit 0 only
after commit" holds for every member. A message whose parse fails is answered TEMPFAIL alone;
when the transaction fails, every member is answered TEMPFAIL, except that a failure that is
not the database's own (unreachable, locked) makes each member be tried again alone, so one
bad message cannot keep its neighbours from being recorded.

A group never takes more than :data:`MAX_MESSAGES` messages or (beyond its first message)
:data:`MAX_BYTES` of them, so its memory and its write lock stay bounded.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from sidecar import metrics
from sidecar.bounce.derive import Outcome
from sidecar.bounce.envelope import Envelope
from sidecar.bounce.record import Prepared, Recorder
from sidecar.store.models import RawMessage

MAX_MESSAGES = 64
MAX_BYTES = 16 * 1024 * 1024
#: Failures of the database itself: trying each member alone would only wait that long again.
DATABASE_DOWN = (OperationalError, InterfaceError)


def record_group(recorder: Recorder, items: list[tuple[bytes, Envelope]]) -> list[Outcome | BaseException]:
    """Record ``items`` in one transaction; per item its :class:`Outcome` or the exception that
    kept it from being recorded (the caller answers that one TEMPFAIL). In the database thread."""
    t0 = time.perf_counter()
    now = time.time()
    results: list[Outcome | BaseException | None] = [None] * len(items)
    digests = [hashlib.sha256(raw).hexdigest() for raw, _ in items]
    rm = RawMessage.__table__.c
    with recorder.engine.connect() as conn:
        rows = conn.execute(select(rm.sha256, rm.id).where(rm.sha256.in_(set(digests))))
        known = {digest: mid for digest, mid in rows}
    ready: list[tuple[int, Prepared]] = []
    for n, (raw, env) in enumerate(items):
        try:
            item = recorder.prepare(raw, env, now, known=known.get(digests[n]), digest=digests[n])
        except Exception as e:
            metrics.INGEST_MESSAGES.labels("tempfail").inc()
            results[n] = e
            continue
        if isinstance(item, Outcome):
            results[n] = item
        else:
            ready.append((n, item))
    if ready:
        metrics.INGEST_GROUP_SIZE.observe(len(ready))
        try:
            with recorder.engine.begin() as conn:
                written = [(n, item, recorder.write(conn, item, now)) for n, item in ready]
        except Exception as e:
            if len(ready) == 1 or isinstance(e, DATABASE_DOWN):
                metrics.INGEST_MESSAGES.labels("tempfail").inc(len(ready))
                for n, _ in ready:
                    results[n] = e
            else:
                _one_by_one(recorder, ready, now, t0, results)
        else:
            for n, item, out in written:
                recorder.finished(item, out, t0)
                results[n] = out
    return [r if r is not None else RuntimeError("not recorded") for r in results]


def _one_by_one(
    recorder: Recorder, ready: list[tuple[int, Prepared]], now: float, t0: float, results: list[Any]
) -> None:
    """After a failed group transaction: each member in a transaction of its own."""
    for n, item in ready:
        try:
            with recorder.engine.begin() as conn:
                out = recorder.write(conn, item, now)
        except Exception as e:
            metrics.INGEST_MESSAGES.labels("tempfail").inc()
            results[n] = e
            continue
        recorder.finished(item, out, t0)
        results[n] = out


def _read_spool(spool: Any) -> bytes:
    try:
        spool.seek(0)
        return bytes(spool.read())
    finally:
        spool.close()


def _record_spools(recorder: Recorder, batch: list[tuple[Any, Envelope]]) -> list[Outcome | BaseException]:
    """In the database thread: read the spooled messages back, then :func:`record_group`."""
    items: list[tuple[bytes, Envelope]] = []
    try:
        for spool, env in batch:
            items.append((_read_spool(spool), env))
    finally:
        for spool, _ in batch[len(items) :]:
            spool.close()
    return record_group(recorder, items)


class GroupCommit:
    """The reactor side: :meth:`submit` a spooled message, get a Deferred that fires with its
    :class:`Outcome` once its group has committed (or fails with why it was not recorded)."""

    def __init__(self, recorder: Recorder, reactor: Any, threadpool: Any) -> None:
        self.recorder = recorder
        self.reactor = reactor
        self.threadpool = threadpool
        self.waiting: list[tuple[Any, Envelope, int, Deferred[Outcome]]] = []
        self.running = False

    def submit(self, spool: Any, env: Envelope, length: int) -> Deferred[Outcome]:
        d: Deferred[Outcome] = Deferred()
        self.waiting.append((spool, env, length, d))
        self._next()
        return d

    def _next(self) -> None:
        if self.running or not self.waiting:
            return
        take, size = 0, 0
        for _, _, length, _ in self.waiting[:MAX_MESSAGES]:
            if take and size + length > MAX_BYTES:
                break
            take, size = take + 1, size + length
        group, self.waiting = self.waiting[:take], self.waiting[take:]
        self.running = True
        batch = [(spool, env) for spool, env, _, _ in group]
        work = deferToThreadPool(self.reactor, self.threadpool, _record_spools, self.recorder, batch)
        work.addCallbacks(self._answer, self._failed, callbackArgs=(group,), errbackArgs=(group,))

    def _answer(self, results: list[Outcome | BaseException], group: list[Any]) -> None:
        try:
            for (_, _, _, d), result in zip(group, results, strict=True):
                if isinstance(result, BaseException):
                    d.errback(Failure(result))
                else:
                    d.callback(result)
        finally:
            self.running = False
            self._next()

    def _failed(self, f: Failure, group: list[Any]) -> None:
        metrics.INGEST_MESSAGES.labels("tempfail").inc(len(group))
        try:
            for _, _, _, d in group:
                d.errback(f)
        finally:
            self.running = False
            self._next()
