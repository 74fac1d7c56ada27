"""Record one message: raw bytes, events and suppression decisions, in ONE transaction.

Used by the hand-off service (in its database thread pool), by the in-process fallback of
``sidecar ingest``, by ``sidecar import`` and by ``sidecar replay``. Parsing happens before
the transaction; the write lock is held only for the inserts.

Suppression policy (config keys under ``[ingest]``; see docs/ingest.md):

* hard bounce (``hard`` true, never a 4.x.x status) -> global suppression "hard bounce",
  permanent unless ``hard_suppression`` > 0: a dead mailbox is dead for every tenant;
* complaint (ARF) -> suppression "complaint" for the tenant(s) our own data knows (VERP
  tenant, else the record of recipients); global only from a feedback-loop source;
* soft failure (``hard`` false, Action failed, category invalid-recipient / mailbox-full /
  dns / network) -> counted; ``soft_threshold`` of them within ``soft_window`` -> global
  suppression "soft bounces" for ``soft_suppression``;
* delay (Action delayed) -> event kind "delay", never counted;
* block / policy, message-too-big, unknown, auto-reply, delivered -> event only.

An existing active suppression that already lasts at least as long is never shortened or
relabelled (a manual suppression stays manual): the new events are linked to it as causes.

Whether a message may cause a suppression at all is :mod:`sidecar.bounce.trust`'s question
(VERP, the record of recipients, feedback-loop sources); the per-message caps
``max_failed_recipients`` and ``max_suppressions_per_message`` bound what one message can do
and how long its transaction holds the write lock.
"""

from __future__ import annotations

import hashlib
import logging
import time
import zlib
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from sidecar import metrics
from sidecar import recipients as recipient_record
from sidecar.bounce import trust
from sidecar.bounce.derive import Decision, Derived, EventKind, Finding, MessageState, Outcome, derive_raw
from sidecar.bounce.envelope import Envelope
from sidecar.bounce.rules import (
    REASON_COMPLAINT,
    REASON_SOFT,
    decide,
    soft_events,
)
from sidecar.recipients import RecipientLookup
from sidecar.reputation.attribution import counted_queue_id
from sidecar.store.db import dialect_insert, ensure_schema, insert_for
from sidecar.store.models import Event, RawMessage, Suppression, SuppressionCause
from sidecar.suppression.store import SuppressionStore
from sidecar.units import InvalidValue

log = logging.getLogger("sidecar.bounce")

# Statements built once, values passed as parameters: building ``.values(...)`` per message cost
# about a seventh of the service's time per hand-off (SQLAlchemy's coercion of each value).
_INSERT_EVENT = insert(Event).returning(Event.id)
_INSERT_RAW = {
    name: insert_for(name, RawMessage.__table__)
    .on_conflict_do_nothing(index_elements=["sha256"])
    .returning(RawMessage.__table__.c.id)
    for name in ("sqlite", "postgresql")
}


class Suppressed(StrEnum):
    """What the suppression step did for one scope; anything but ADDED is noted after the decision."""

    ADDED = "added"
    COVERED = "covered"  # linked as a cause to an existing suppression that lasts at least as long
    EXPIRED = "expired"  # an old message (import, replay) whose suppression would already be over
    REFUSED = "refused"  # a value the store refuses: retrying the message would not help
    CAP_REACHED = "cap-reached"  # over ingest.max_suppressions_per_message


class Prepared:
    """A message ready to be written: parsed and assessed, outside any transaction."""

    __slots__ = ("raw", "env", "digest", "derived")

    def __init__(self, raw: bytes, env: Envelope, digest: str, derived: Derived) -> None:
        self.raw, self.env, self.digest, self.derived = raw, env, digest, derived


class Recorder:
    """Writes messages, events and suppressions; ``cfg`` is the whole :class:`Config`.

    ``recipients``: the relay's record of recipients (default: ``recipients.open_lookup``, opened
    on first use). ``corroborate``: whether an address needs VERP or the record to suppress;
    None = ``ingest.require_corroboration`` (the pipe, replay); ``sidecar import`` passes False
    (its own material: the bounce's structure is enough) unless ``--require-record``.
    """

    def __init__(
        self,
        cfg: Any,
        engine: Engine,
        parse: Callable[[bytes], Any] | None = None,
        *,
        recipients: RecipientLookup | None = None,
        corroborate: bool | None = None,
    ) -> None:
        self.cfg = cfg
        self.icfg = cfg.ingest
        self.engine = engine
        self.parse = parse
        self.store = SuppressionStore(engine, cfg.suppression.local_part_case_sensitive)
        self._recipients = recipients
        self.corroborate = self.icfg.require_corroboration if corroborate is None else corroborate

    @property
    def recipients(self) -> RecipientLookup:
        if self._recipients is None:
            self._recipients = recipient_record.open_lookup(self.cfg, self.engine)
        return self._recipients

    def derive(self, raw: bytes, env: Envelope) -> Derived:
        """Parse (outside any transaction) and tell where the message came from."""
        d = derive_raw(raw, env, self.icfg.verp_key, self.store.canonical, self.parse, self.icfg.max_failed_recipients)
        d.feedback_loop = trust.is_feedback_loop(env.recipient, env.extension, env.sender, self.icfg.feedback_loops)
        return d

    def assess(self, d: Derived, when: float) -> dict[str, trust.Standing]:
        """Our own data on the addresses ``d`` names (record look-ups: before the write transaction)."""
        if d.standings is None:
            d.standings = trust.assess(d.findings, d.verified, self.recipients, when, self.store.case_sensitive_local)
        return d.standings

    # -- one message ---------------------------------------------------------------------------
    def record(
        self, raw: bytes, env: Envelope, *, now: float | None = None, keep_parse_errors: bool = False
    ) -> Outcome:
        """Store ``raw`` with its events and decisions in one transaction, or find it a duplicate.

        A parser crash propagates (the pipe exits 75 and Postfix retries) unless
        ``keep_parse_errors``: then the message is stored "unparsed" with the error, for replay.
        (Several messages in one transaction: :func:`sidecar.bounce.group.record_group`.)
        """
        t0 = time.perf_counter()
        now = time.time() if now is None else now
        try:
            item = self.prepare(raw, env, now, keep_parse_errors=keep_parse_errors)
            if isinstance(item, Outcome):
                return item
            with self.engine.begin() as conn:
                out = self.write(conn, item, now)
        except BaseException:
            metrics.INGEST_MESSAGES.labels("tempfail").inc()
            raise
        self.finished(item, out, t0)
        return out

    def prepare(
        self,
        raw: bytes,
        env: Envelope,
        now: float,
        *,
        keep_parse_errors: bool = False,
        known: int | None = -1,
        digest: str | None = None,
    ) -> Prepared | Outcome:
        """Everything before the write transaction: the duplicate check, the parse, our own data on
        the addresses. An :class:`Outcome` for a message already recorded (``known``: its id when
        the caller looked it up already, None when it found none; -1: look it up here; ``digest``:
        the raw message's sha256 when the caller has it)."""
        digest = digest or hashlib.sha256(raw).hexdigest()
        if known == -1:
            with self.engine.connect() as conn:
                known = conn.execute(select(RawMessage.id).where(RawMessage.sha256 == digest)).scalar()
        if known is not None:
            metrics.INGEST_MESSAGES.labels("duplicate").inc()
            return Outcome(MessageState.DUPLICATE, known)
        try:
            d = self.derive(raw, env)
        except Exception as e:
            if not keep_parse_errors:
                raise
            log.exception("parser error on queue_id=%s", env.queue_id or "-")
            d = Derived(MessageState.UNPARSED, None, [], f"parser error: {type(e).__name__}: {e}"[:1000])
        self.assess(d, now)
        return Prepared(raw, env, digest, d)

    def write(self, conn: Connection, item: Prepared, now: float) -> Outcome:
        """The raw message, its events and decisions, inside the caller's transaction."""
        d, env, raw = item.derived, item.env, item.raw
        mid = conn.execute(
            _INSERT_RAW[conn.dialect.name],
            {
                "sha256": item.digest,
                "received_at": now,
                "queue_id": env.queue_id or None,
                "envelope_sender": env.sender or None,
                "envelope_recipient": env.recipient or None,
                "extension": env.extension or None,
                "size": env.size or len(raw),
                "content": zlib.compress(raw, 6),
                "state": d.state,
                "kind": d.kind,
                "parser_version": d.parser_version,
                "error": d.error,
            },
        ).scalar()
        if mid is None:  # recorded meanwhile by another process (or earlier in the same transaction)
            return Outcome(MessageState.DUPLICATE, None)
        out = Outcome(d.state, mid)
        self.apply(conn, d, mid, now, out, reputation_queue_id=counted_queue_id(self.cfg, raw))
        return out

    def finished(self, item: Prepared, out: Outcome, t0: float) -> None:
        """After the commit: count and log what was recorded."""
        if out.outcome == MessageState.DUPLICATE:
            metrics.INGEST_MESSAGES.labels("duplicate").inc()
            return
        metrics.INGEST_MESSAGES.labels(item.derived.state).inc()
        metrics.INGEST_LATENCY.observe(time.perf_counter() - t0)
        log.info("ingested queue_id=%s %s", item.env.queue_id or "-", out.summary())

    def gate(self, d: Derived, when: float) -> trust.Gate:
        c = self.icfg
        return trust.Gate(
            c.require_verp, self.corroborate, c.complaint_scope, d.verified, d.feedback_loop, self.assess(d, when)
        )

    def apply(
        self,
        conn: Connection,
        d: Derived,
        message_id: int,
        when: float,
        out: Outcome,
        findings: Iterable[Finding] | None = None,
        reputation_queue_id: str | None = None,
    ) -> None:
        """Insert events for ``findings`` (default: all of ``d``) and act on them.

        With ``reputation_queue_id`` (not None), what was newly suppressed counts for the
        sending tenant's reputation (:mod:`sidecar.reputation.attribution`).

        At most ``ingest.max_suppressions_per_message`` suppressions are made; when that cap or
        ``max_failed_recipients`` was hit, one event of kind ``cap-reached`` says so with the counts.
        """
        gate = self.gate(d, when)
        room = self.icfg.max_suppressions_per_message
        capped = 0
        counted: list[tuple[str, str]] = []
        for f in d.findings if findings is None else findings:
            if f.kind in (EventKind.BOUNCE, EventKind.DELAY):
                metrics.INGEST_RECIPIENTS.labels(f.category or "unknown", str(f.hard).lower()).inc()
            decision, sup = decide(self.icfg, conn, f, when, ignore=d.state == MessageState.BAD_VERP)
            scopes: list[str] = []
            if sup is not None or decision == Decision.SOFT:
                held, scopes = gate.scopes(f.address, sup is not None and sup[1] == REASON_COMPLAINT)
                if held is not None:
                    metrics.INGEST_WITHHELD.labels(held).inc()
                    decision, sup = held, None
            eid = self._event(conn, message_id, when, f, decision)
            out.recipients += 1
            out.decisions.append((f.address, decision))
            if sup is None:
                continue
            notes: list[Suppressed] = []
            added: list[str] = []
            for scope in scopes:
                if room <= 0:
                    capped += 1
                    done = Suppressed.CAP_REACHED
                else:
                    room -= 1
                    done = self._suppress(conn, f, eid, when, scope, sup[1], sup[2])
                if done == Suppressed.ADDED:
                    out.suppressions += 1
                    added.append(scope)
                elif done not in notes:
                    notes.append(done)
            if added and reputation_queue_id is not None:
                from sidecar.reputation.attribution import for_finding

                since = when - self.cfg.reputation.retention
                counted.extend(for_finding(conn, f, d.verified, d.standings, added, reputation_queue_id, since))
            if notes:
                stored = f"{decision} ({', '.join(notes)})"
                conn.execute(update(Event).where(Event.id == eid).values(decision=stored))
                out.decisions[-1] = (f.address, stored)
        if counted:
            from sidecar.reputation.attribution import count

            count(conn, counted, when)
        dropped = d.dropped if findings is None else 0
        if dropped or capped:
            self._cap_event(conn, message_id, when, out.recipients, dropped, capped)

    def _event(self, conn: Connection, message_id: int | None, when: float, f: Finding, decision: Decision) -> int:
        row = {
            "created_at": when,
            "kind": f.kind,
            "address": f.address,
            "tenant": f.tenant,
            "category": f.category,
            "reason": f.reason,
            "hard": f.hard,
            "status": (f.status or None) and f.status[:16],
            "action": (f.action or None) and f.action[:16],
            "remote_mta": (f.remote_mta or None) and f.remote_mta[:255],
            "diagnostic": f.diagnostic,
            "decision": decision,
            "message_id": message_id,
        }
        return int(conn.execute(_INSERT_EVENT, row).scalar_one())

    def _cap_event(
        self, conn: Connection, message_id: int, when: float, recorded: int, dropped: int, capped: int
    ) -> None:
        c = self.icfg
        parts = []
        if dropped:
            metrics.INGEST_CAPS.labels("recipients").inc()
            parts.append(
                f"{recorded + dropped} recipients named, {recorded} recorded, {dropped} only counted "
                f"(ingest.max_failed_recipients = {c.max_failed_recipients})"
            )
        if capped:
            metrics.INGEST_CAPS.labels("suppressions").inc()
            parts.append(
                f"{capped} suppressions withheld "
                f"(ingest.max_suppressions_per_message = {c.max_suppressions_per_message})"
            )
        log.warning("message %s: %s", message_id, "; ".join(parts))
        conn.execute(
            insert(Event).values(
                created_at=when,
                kind=EventKind.CAP_REACHED,
                address=None,
                tenant="",
                decision=Decision.CAP_REACHED,
                diagnostic="; ".join(parts),
                message_id=message_id,
            )
        )

    def _suppress(
        self,
        conn: Connection,
        f: Finding,
        event_id: int,
        when: float,
        tenant: str,
        reason: str,
        expires_at: float | None,
    ) -> Suppressed:
        """ADDED, or why not (:class:`Suppressed`)."""
        if expires_at is not None and expires_at <= time.time():
            return Suppressed.EXPIRED
        s = Suppression.__table__.c
        cur = conn.execute(
            select(s.id, s.expires_at).where(s.address == f.address, s.tenant == tenant, s.active.is_(True))
        ).first()
        if cur is not None and (cur.expires_at is None or (expires_at is not None and cur.expires_at >= expires_at)):
            conn.execute(
                dialect_insert(conn, SuppressionCause.__table__).on_conflict_do_nothing(),
                [{"suppression_id": cur.id, "event_id": event_id}],
            )
            return Suppressed.COVERED
        causes = [event_id]
        if reason == REASON_SOFT:
            causes = sorted(set(soft_events(self.icfg, conn, f.address, when)) | {event_id})
        try:
            self.store.add(
                f.address,
                tenant=tenant,
                reason=reason,
                category=f.category,
                source="bounce",
                expires_at=expires_at,
                now=when,
                cause_event_ids=causes,
                conn=conn,
            )
        except InvalidValue as e:  # a value the store refuses: retrying the message would not help
            log.warning("not suppressing %r: %s", f.address, e)
            return Suppressed.REFUSED
        metrics.INGEST_SUPPRESSIONS.labels(reason).inc()
        return Suppressed.ADDED


def open_recorder(cfg: Any, parse: Callable[[bytes], Any] | None = None) -> Recorder:
    """A Recorder on a fresh engine for ``cfg.database.url``; creates the schema if missing."""
    from sidecar.store.db import make_engine

    engine = make_engine(cfg.database.url, create_dir=False)
    ensure_schema(engine)
    return Recorder(cfg, engine, parse)
