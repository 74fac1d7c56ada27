"""The webhook outbox: derive deliveries from the ``events`` and ``changes`` feeds.

Nothing that writes events or suppressions knows about webhooks. Both feeds are durable,
append-only and id-ordered, and are written in the same transactions as the state they
describe; the dispatcher reads them by a per-subscription cursor and inserts one
``webhook_deliveries`` row per subscription and event, and moves the cursor, in one
transaction. A re-read (after a restart, or while waiting for an out-of-order commit to
fill a gap) inserts nothing twice: (subscription, source, source_id) is unique.
What happens to a delivery afterwards (claimed, attempted, retried, listed, redelivered)
is sidecar.webhooks.deliveries.

All functions are synchronous: the service runs them in its database thread pool, the
CLI and the API call them directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from sidecar import errors
from sidecar.config import redact_url
from sidecar.domains.events import event_data as domain_event_data
from sidecar.store.db import dialect_insert
from sidecar.store.models import Change, Event, WebhookCursor, WebhookDelivery
from sidecar.suppression.changefeed import ChangeCursor
from sidecar.suppression.store import iso

EVENT_KINDS = {
    "bounce": "bounce.recorded",
    "complaint": "complaint.recorded",
    "ratelimit": "ratelimit.exceeded",
    "domain": "domain.check_changed",
    "reputation": "reputation.level_changed",  # or reputation.released (events.action "released")
}


@dataclass(frozen=True)
class Subscription:
    name: str
    url: str
    secret: str
    events: frozenset[str]
    legacy_name: str = ""  # the full URL, an unnamed subscription's name before it was redacted
    ca_file: str = ""


def subscriptions(cfg_subs: Iterable[Any]) -> list[Subscription]:
    """From ``cfg.webhooks.subscriptions``; the name defaults to the redacted URL."""
    return [
        Subscription(
            s.name or redact_url(s.url),
            s.url,
            s.secret,
            frozenset(s.events),
            legacy_name="" if s.name else s.url,
            ca_file=s.ca_file,
        )
        for s in cfg_subs
    ]


def event_payload(row: Any) -> tuple[str, str, dict[str, Any]] | None:
    """(type, ordering address, payload) for an ``events`` row, or None if not a webhook event."""
    etype = EVENT_KINDS.get(row.kind)
    if etype is None:
        return None
    if row.kind == "reputation":
        return reputation_payload(row)
    data: dict[str, Any]
    if row.kind == "domain":
        data = domain_event_data(row)
        order = f"domain:{row.address}:{row.reason}"
    elif row.kind == "ratelimit":
        key = f"{row.reason}:{row.address or ''}"
        n = (row.diagnostic or "").split(" ", 1)[0]
        data = {
            "rule": row.reason,
            "key": key,
            "value": row.address,
            "refused": int(n) if n.isdigit() else None,
            "minute": iso(row.created_at),
        }
        order = "ratelimit:" + key
    else:
        data = {
            "address": row.address,
            "tenant": row.tenant,
            "category": row.category,
            "reason": row.reason,
            "hard": row.hard,
            "status": row.status,
            "action": row.action,
            "remote_mta": row.remote_mta,
            "diagnostic": row.diagnostic,
            "decision": row.decision,
            "message_id": row.message_id,
        }
        order = row.address or ""
    data["event_id"] = row.id
    return etype, order, {"id": f"evt_e{row.id}", "type": etype, "created_at": iso(row.created_at), "data": data}


def reputation_payload(row: Any) -> tuple[str, str, dict[str, Any]]:
    """A reputation audit event: tenant, from, to, reason, rates, volume (and who, for an operator's)."""
    etype = "reputation.released" if row.action == "released" else "reputation.level_changed"
    data = json.loads(row.diagnostic or "{}")
    data["event_id"] = row.id
    order = "reputation:" + row.tenant
    return etype, order, {"id": f"evt_e{row.id}", "type": etype, "created_at": iso(row.created_at), "data": data}


def change_payload(row: Any) -> tuple[str, str, dict[str, Any]] | None:
    if row.kind != "suppression":
        return None
    etype = "suppression.added" if row.active else "suppression.removed"
    data = {"address": row.address, "tenant": row.tenant, "change_id": row.id}
    if row.active:
        data.update(reason=row.reason, created_at=iso(row.created_at), expires_at=iso(row.expires_at) or None)
    return etype, row.address, {"id": f"evt_c{row.id}", "type": etype, "created_at": iso(row.changed_at), "data": data}


SOURCES: dict[str, tuple[Any, Any, Any]] = {
    "e": (Event.__table__, Event.__table__.c.created_at, event_payload),
    "c": (Change.__table__, Change.__table__.c.changed_at, change_payload),
}


class Outbox:
    """Materialises deliveries; keeps an in-memory gap-aware cursor per subscription and feed.

    Each subscription is materialised in its own transaction, on copies of its cursors: the
    in-memory cursors move only once that transaction has committed, so a failed round (a
    locked database, a lost connection) reads the same events again next round. A failure
    is kept in ``failures`` (subscription -> one-line error) for the caller to log and count;
    the other subscriptions go on.
    """

    def __init__(
        self,
        engine: Engine,
        subs: Sequence[Subscription],
        *,
        batch: int = 2000,
        max_batches: int = 10,
        gap_timeout: float = 10.0,
    ) -> None:
        self.engine = engine
        self.subs = list(subs)
        self.batch, self.max_batches, self.gap_timeout = batch, max_batches, gap_timeout
        self.cursors: dict[tuple[str, str], ChangeCursor] = {}
        self.failures: dict[str, str] = {}

    def _load_cursors(self, conn: Connection, sub: Subscription, now: float) -> dict[str, ChangeCursor]:
        """Copies of ``sub``'s cursors (the stored ones if those are ahead); a new subscription starts at the end."""
        row = conn.execute(select(WebhookCursor.__table__).where(WebhookCursor.subscription == sub.name)).first()
        if row is None and sub.legacy_name:
            row = _rename(conn, sub.legacy_name, sub.name)
        if row is None:
            ev = conn.execute(select(func.coalesce(func.max(Event.id), 0))).scalar_one()
            ch = conn.execute(select(func.coalesce(func.max(Change.id), 0))).scalar_one()
            conn.execute(
                insert(WebhookCursor).values(subscription=sub.name, events_id=ev, changes_id=ch, updated_at=now)
            )
            lows = {"e": ev, "c": ch}
        else:
            lows = {"e": row.events_id, "c": row.changes_id}
        out = {}
        for src, low in lows.items():
            cur = self.cursors.get((sub.name, src))
            out[src] = ChangeCursor(low, self.gap_timeout) if cur is None or cur.low < low else _copy(cur)
        return out

    def materialise(self, now: float) -> int:
        """Derive new deliveries for every subscription (one transaction each); returns how many."""
        made = 0
        self.failures = {}
        for sub in self.subs:
            try:
                made += self._materialise_one(sub, now)
            except Exception as e:
                self.failures[sub.name] = one_line(e)
        return made

    def _materialise_one(self, sub: Subscription, now: float) -> int:
        made = 0
        with self.engine.begin() as conn:
            cursors = self._load_cursors(conn, sub, now)
            items: list[tuple[float, str, int, str, str, str, str | None]] = []
            for src, (table, when, derive) in SOURCES.items():
                cursor = cursors[src]
                after = cursor.low
                for _ in range(self.max_batches):
                    rows: Any = conn.execute(
                        select(table).where(table.c.id > after).order_by(table.c.id).limit(self.batch)
                    ).all()
                    accepted: list[Any] = cursor.accept(rows, now)
                    for r in accepted:
                        d = _derive(derive, src, r)
                        if d is not None and d[0] in sub.events:
                            items.append((r._mapping[when.name] or 0.0, src, r.id, *d))
                    if len(rows) < self.batch:
                        break
                    after = rows[-1].id
            items.sort(key=lambda i: (i[0], i[1] != "e", i[2]))  # bounce before the suppression it caused
            if items:
                ins = (
                    dialect_insert(conn, WebhookDelivery.__table__)
                    .on_conflict_do_nothing(index_elements=["subscription", "source", "source_id"])
                    .returning(WebhookDelivery.__table__.c.id)
                )
                res = conn.execute(
                    ins,
                    [
                        {
                            "subscription": sub.name,
                            "event_type": etype,
                            "source": src,
                            "source_id": sid,
                            "address": addr[:512],
                            "payload": payload,
                            "status": "dead" if error else "pending",
                            "attempts": 0,
                            "created_at": now,
                            "next_attempt_at": now,
                            "last_error": error,
                        }
                        for _, src, sid, etype, addr, payload, error in items
                    ],
                )
                made += len(res.all())  # rowcount is unreliable for executemany
            conn.execute(
                update(WebhookCursor)
                .where(WebhookCursor.subscription == sub.name)
                .values(events_id=cursors["e"].low, changes_id=cursors["c"].low, updated_at=now)
            )
        for src, cur in cursors.items():  # committed: now the cursors may move
            self.cursors[(sub.name, src)] = cur
        return made


def _copy(cur: ChangeCursor) -> ChangeCursor:
    c = ChangeCursor(cur.low, cur.gap_timeout)
    c.applied, c.gaps = set(cur.applied), dict(cur.gaps)
    return c


def _rename(conn: Connection, old: str, new: str) -> Any:
    """A subscription named after its URL before 0.1.0's redaction: keep its cursor and deliveries."""
    row = conn.execute(select(WebhookCursor.__table__).where(WebhookCursor.subscription == old)).first()
    if row is not None:
        conn.execute(update(WebhookCursor).where(WebhookCursor.subscription == old).values(subscription=new))
        conn.execute(update(WebhookDelivery).where(WebhookDelivery.subscription == old).values(subscription=new))
    return row


def _derive(derive: Any, src: str, row: Any) -> tuple[str, str, str, str | None] | None:
    """(type, address, payload JSON, error): a row whose payload cannot be built is set aside as dead."""
    try:
        d = derive(row)
        return None if d is None else (d[0], d[1] or "", json.dumps(d[2], separators=(",", ":")), None)
    except Exception as e:
        etype = (
            EVENT_KINDS.get(row.kind)
            if src == "e"
            else None
            if row.kind != "suppression"
            else "suppression.added"
            if row.active
            else "suppression.removed"
        )
        if etype is None:
            return None
        error = f"cannot build the payload: {one_line(e)}"
        stub = {"id": f"evt_{src}{row.id}", "type": etype, "data": {"error": error}}
        return etype, "", json.dumps(stub, separators=(",", ":")), error


def one_line(e: BaseException) -> str:
    """``Type: message`` on one line, at most 500 characters (a database error without its SQL)."""
    return errors.one_line(e, 500, with_type=True)
