"""Record one message: raw bytes, events and suppression decisions, in ONE transaction.

Used by the hand-off service (in its database thread pool), by the in-process fallback of
``sidecar ingest``, by ``sidecar import`` and by ``sidecar replay``. Parsing happens before
the transaction; the write lock is held only for the inserts.

Suppression policy (config keys under ``[ingest]``; see docs/ingest.md):

* hard bounce (``hard`` true, never a 4.x.x status) -> global suppression "hard bounce",
  permanent unless ``hard_suppression`` > 0: a dead mailbox is dead for every tenant;
* complaint (ARF) -> suppression "complaint" for the tenant (VERP tenant, else the original
  sender's domain; ``complaint_scope = "global"`` or no tenant known -> global);
* soft failure (``hard`` false, Action failed, category invalid-recipient / mailbox-full /
  dns / network) -> counted; ``soft_threshold`` of them within ``soft_window`` -> global
  suppression "soft bounces" for ``soft_suppression``;
* delay (Action delayed) -> event kind "delay", never counted;
* block / policy, message-too-big, unknown, auto-reply, delivered -> event only.

An existing active suppression that already lasts at least as long is never shortened or
relabelled (a manual suppression stays manual): the new events are linked to it as causes.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError, ProgrammingError

from sidecar import metrics
from sidecar.bounce.ingest import Envelope
from sidecar.store.models import Event, RawMessage, Suppression, SuppressionCause
from sidecar.suppression.address import AddressError
from sidecar.suppression.store import SuppressionStore

log = logging.getLogger("sidecar.bounce")

SOFT_COUNTED = frozenset({"invalid-recipient", "mailbox-full", "dns", "network"})
REASON_HARD, REASON_COMPLAINT, REASON_SOFT = "hard bounce", "complaint", "soft bounces"
SUPERSEDED = "superseded"  # decision of an event replaced by a replay (kept for history)


@dataclass(frozen=True, slots=True)
class Finding:
    """One event to record, derived from a parse result (and VERP data)."""

    address: str
    tenant: str
    kind: str  # bounce | delay | complaint | auto-reply | delivered
    category: str | None
    reason: str | None
    hard: bool | None
    status: str | None = None
    action: str | None = None
    remote_mta: str | None = None
    diagnostic: str | None = None

    def key(self) -> tuple[Any, ...]:
        return (self.address, self.tenant, self.kind, self.category, self.hard, self.status)


@dataclass
class Derived:
    state: str  # parsed | unparsed | not-bounce | bad-verp
    kind: str | None
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None
    parser_version: str | None = None


@dataclass
class Outcome:
    outcome: str  # parsed | unparsed | not-bounce | bad-verp | duplicate
    message_id: int | None
    recipients: int = 0
    suppressions: int = 0
    decisions: list[tuple[str, str]] = field(default_factory=list)  # (address, decision)

    def summary(self) -> str:
        return f"{self.outcome} id={self.message_id} recipients={self.recipients} suppressions={self.suppressions}"


def _domain(address: str | None) -> str:
    a = (address or "").strip().strip("<>")
    return a.rpartition("@")[2].lower() if "@" in a else ""


def _verp(key: str, token: str) -> tuple[Any, str | None]:
    """(VerpData or None, error or None) for the ``${extension}`` token."""
    if not key or not token:
        return None, None
    from sidecar.bounce.verp import BadVerpToken, parse_verp_token

    try:
        return parse_verp_token(key.encode("utf-8"), token), None
    except BadVerpToken as e:
        return None, f"bad VERP token: {e}"


_REPORT = re.compile(rb"^content-type:[ \t]*(?:multipart/report|message/(?:delivery-status|feedback-report))",
                     re.I | re.M)


def looks_like_report(raw: bytes) -> bool:
    """A MIME report (DSN, ARF) by its content type: worth keeping as "unparsed" for replay."""
    return _REPORT.search(raw[:262144]) is not None


def derive(parsed: Any, env: Envelope, verp_key: str, canonical: Callable[[str], str],
           raw: bytes = b"") -> Derived:
    """Turn a ParsedMessage into what gets recorded. Pure: no database."""
    kind = parsed.kind.value
    verp, verp_error = _verp(verp_key, env.extension)
    recipients = list(parsed.recipients)
    if verp is not None:
        # Our own envelope data beats what a remote MTA wrote: VERP mail has one recipient.
        want = verp.recipient.lower()
        same = [r for r in recipients if (r.address or "").lower() == want]
        recipients = same or recipients[:1]
    tenant = (verp.tenant if verp is not None and verp.tenant else "") or _domain(parsed.original_envelope_from)
    findings = []
    for r in recipients:
        address = verp.recipient if verp is not None else r.address
        try:
            address = canonical(address)
        except AddressError:
            log.info("ignoring unusable address %r", address)
            continue
        action = (r.action or "").lower() or None
        category = r.category.value if r.category is not None else None
        if kind == "delay" or action == "delayed":
            fkind = "delay"
        elif kind in ("complaint", "auto-reply", "delivered"):
            fkind = kind
        elif category in ("complaint", "auto-reply"):
            fkind = category
        elif action in ("delivered", "relayed", "expanded"):
            fkind = "delivered"
        else:
            fkind = "bounce"
        findings.append(
            Finding(
                address=address,
                tenant=tenant,
                kind=fkind,
                category=category,
                reason=r.reason,
                hard=r.hard,
                status=r.status,
                action=action,
                remote_mta=r.remote_mta,
                diagnostic=(r.diagnostic or None),
            )
        )
    if verp_error:
        return Derived("bad-verp", kind, findings, verp_error)
    if kind == "not-bounce" and not findings and not looks_like_report(raw):
        return Derived("not-bounce", kind, [])
    if not findings:
        return Derived("unparsed", kind, [], "no recipients found")
    return Derived("parsed", kind, findings)


def derive_raw(
    raw: bytes,
    env: Envelope,
    verp_key: str,
    canonical: Callable[[str], str],
    parse: Callable[[bytes], Any] | None = None,
) -> Derived:
    if env.truncated:
        return Derived(
            "unparsed",
            None,
            [],
            f"truncated: message of {env.size} bytes is larger than "
            f"ingest.max_message_size, first {len(raw)} bytes kept",
        )
    from sidecar.bounce import parse as parser

    parsed = (parse or parser.parse_message)(raw)  # a crash here propagates: tempfail, retried
    d = derive(parsed, env, verp_key, canonical, raw)
    d.parser_version = getattr(parser, "PARSER_VERSION", None)
    return d


def _insert(conn: Connection, table: Any) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


class Recorder:
    """Writes messages, events and suppressions; ``cfg`` is the whole :class:`Config`."""

    def __init__(self, cfg: Any, engine: Engine, parse: Callable[[bytes], Any] | None = None) -> None:
        self.cfg = cfg
        self.icfg = cfg.ingest
        self.engine = engine
        self.parse = parse
        self.store = SuppressionStore(engine, cfg.suppression.local_part_case_sensitive)

    # -- one message ---------------------------------------------------------------------------
    def record(self, raw: bytes, env: Envelope, *, now: float | None = None,
               keep_parse_errors: bool = False) -> Outcome:
        """Store ``raw`` with its events and decisions in one transaction, or find it a duplicate.

        A parser crash propagates (the pipe exits 75 and Postfix retries) unless
        ``keep_parse_errors``: then the message is stored "unparsed" with the error, for replay.
        """
        t0 = time.perf_counter()
        now = time.time() if now is None else now
        digest = hashlib.sha256(raw).hexdigest()
        try:
            with self.engine.connect() as conn:
                dup = conn.execute(select(RawMessage.id).where(RawMessage.sha256 == digest)).scalar()
            if dup is not None:
                metrics.INGEST_MESSAGES.labels("duplicate").inc()
                return Outcome("duplicate", dup)
            try:
                d = derive_raw(raw, env, self.icfg.verp_key, self.store.canonical, self.parse)
            except Exception as e:
                if not keep_parse_errors:
                    raise
                log.exception("parser error on queue_id=%s", env.queue_id or "-")
                d = Derived("unparsed", None, [], f"parser error: {type(e).__name__}: {e}"[:1000])
            with self.engine.begin() as conn:
                mid = conn.execute(
                    _insert(conn, RawMessage.__table__)
                    .values(
                        sha256=digest,
                        received_at=now,
                        queue_id=env.queue_id or None,
                        envelope_sender=env.sender or None,
                        envelope_recipient=env.recipient or None,
                        extension=env.extension or None,
                        size=env.size or len(raw),
                        content=zlib.compress(raw, 6),
                        state=d.state,
                        kind=d.kind,
                        parser_version=d.parser_version,
                        error=d.error,
                    )
                    .on_conflict_do_nothing(index_elements=["sha256"])
                    .returning(RawMessage.id)
                ).scalar()
                if mid is None:  # recorded meanwhile by another process
                    metrics.INGEST_MESSAGES.labels("duplicate").inc()
                    return Outcome("duplicate", None)
                out = Outcome(d.state, mid)
                self.apply(conn, d, mid, now, out)
        except BaseException:
            metrics.INGEST_MESSAGES.labels("tempfail").inc()
            raise
        metrics.INGEST_MESSAGES.labels(d.state).inc()
        metrics.INGEST_LATENCY.observe(time.perf_counter() - t0)
        log.info("ingested queue_id=%s %s", env.queue_id or "-", out.summary())
        return out

    def apply(
        self,
        conn: Connection,
        d: Derived,
        message_id: int,
        when: float,
        out: Outcome,
        findings: Iterable[Finding] | None = None,
    ) -> None:
        """Insert events for ``findings`` (default: all of ``d``) and act on them."""
        for f in d.findings if findings is None else findings:
            if f.kind in ("bounce", "delay"):
                metrics.INGEST_RECIPIENTS.labels(f.category or "unknown", str(f.hard).lower()).inc()
            decision, sup = self.decide(conn, f, when, ignore=d.state == "bad-verp")
            eid = conn.execute(
                insert(Event)
                .values(
                    created_at=when,
                    kind=f.kind,
                    address=f.address,
                    tenant=f.tenant,
                    category=f.category,
                    reason=f.reason,
                    hard=f.hard,
                    status=(f.status or None) and f.status[:16],
                    action=(f.action or None) and f.action[:16],
                    remote_mta=(f.remote_mta or None) and f.remote_mta[:255],
                    diagnostic=f.diagnostic,
                    decision=decision,
                    message_id=message_id,
                )
                .returning(Event.id)
            ).scalar_one()
            out.recipients += 1
            out.decisions.append((f.address, decision))
            if sup is not None:
                done = self._suppress(conn, f, eid, when, *sup)
                if done == "added":
                    out.suppressions += 1
                else:
                    decision = f"{decision} ({done})"
                    conn.execute(update(Event).where(Event.id == eid).values(decision=decision))
                    out.decisions[-1] = (f.address, decision)

    # -- policy --------------------------------------------------------------------------------
    def decide(
        self, conn: Connection, f: Finding, when: float, ignore: bool = False
    ) -> tuple[str, tuple[str, str, float | None] | None]:
        """(decision, (scope tenant, reason, expires_at) or None). Reads the database (soft counts)."""
        c = self.icfg
        if ignore:
            return "bad-verp", None
        if f.kind == "complaint":
            scope = f.tenant if c.complaint_scope == "tenant" else ""
            return "suppress-complaint", (scope, REASON_COMPLAINT, None)
        if f.kind != "bounce":
            return f.kind if f.kind == "delay" else "record", None
        if f.category == "block":
            return "block", None
        temporary = (f.status or "").startswith("4")
        if f.hard and not temporary:
            exp = when + c.hard_suppression if c.hard_suppression > 0 else None
            return "suppress-hard", ("", REASON_HARD, exp)
        if f.hard is False and f.category in SOFT_COUNTED and f.action in (None, "failed"):
            prior = self._soft_events(conn, f.address, when)
            if len(prior) + 1 >= c.soft_threshold:
                return "suppress-soft", ("", REASON_SOFT, when + c.soft_suppression)
            return "soft", None
        return "record", None

    def _soft_events(self, conn: Connection, address: str, when: float) -> list[int]:
        e = Event.__table__.c
        q = (
            select(e.id)
            .where(
                e.address == address,
                e.kind == "bounce",
                e.hard.is_(False),
                e.category.in_(sorted(SOFT_COUNTED)),
                e.created_at > when - self.icfg.soft_window,
                e.created_at <= when,
                e.decision.notin_((SUPERSEDED, "bad-verp")),
            )
            .order_by(e.id)
        )
        return list(conn.execute(q).scalars())

    def _suppress(
        self,
        conn: Connection,
        f: Finding,
        event_id: int,
        when: float,
        tenant: str,
        reason: str,
        expires_at: float | None,
    ) -> str:
        """ "added"; "covered": linked as a cause to an existing suppression that lasts at least as
        long; "expired": an old message (import, replay) whose suppression would already be over."""
        if expires_at is not None and expires_at <= time.time():
            return "expired"
        s = Suppression.__table__.c
        cur = conn.execute(
            select(s.id, s.expires_at).where(s.address == f.address, s.tenant == tenant, s.active.is_(True))
        ).first()
        if cur is not None and (cur.expires_at is None or (expires_at is not None and cur.expires_at >= expires_at)):
            conn.execute(
                _insert(conn, SuppressionCause.__table__).on_conflict_do_nothing(),
                [{"suppression_id": cur.id, "event_id": event_id}],
            )
            return "covered"
        causes = [event_id]
        if reason == REASON_SOFT:
            causes = sorted(set(self._soft_events(conn, f.address, when)) | {event_id})
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
        metrics.INGEST_SUPPRESSIONS.labels(reason).inc()
        return "added"


def open_recorder(cfg: Any, parse: Callable[[bytes], Any] | None = None) -> Recorder:
    """A Recorder on a fresh engine for ``cfg.database.url``; creates the schema if missing."""
    from sidecar.store.db import make_engine

    engine = make_engine(cfg.database.url, create_dir=False)
    ensure_schema(engine)
    return Recorder(cfg, engine, parse)


def ensure_schema(engine: Engine) -> None:
    """Upgrade only when the tables are missing (cheap check; Alembic is slow to import)."""
    try:
        with engine.connect() as conn:
            conn.execute(select(RawMessage.id).limit(1))
            conn.execute(select(Event.id).limit(1))
        return
    except (OperationalError, ProgrammingError) as e:
        if "no such table" not in str(e) and "does not exist" not in str(e):
            raise
    from sidecar.store.db import upgrade

    upgrade(engine)
