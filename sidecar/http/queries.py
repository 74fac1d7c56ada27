"""The management API's reads, synchronous (run in the service's thread pool; the CLI calls them directly).

Every filter is a bound parameter of a SQLAlchemy expression: no SQL is built from strings.
Lists are keyset-paginated by id (``after`` = the last id of the previous page), so a page
costs the same at the millionth row as at the first.
"""

from __future__ import annotations

import base64
import json
import re
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Select, func, select, tuple_

from sidecar.store.models import Change, Event, RawMessage, Suppression, SuppressionCause
from sidecar.suppression.fields import check_text, control_problem
from sidecar.suppression.store import SuppressionRow, iso
from sidecar.units import InvalidValue

S = Suppression.__table__.c
E = Event.__table__.c
EVENT_KINDS = ("bounce", "delay", "complaint", "auto-reply", "delivered", "ratelimit", "domain", "reputation")
MAX_PAGE = 1000
_ASCII_INT = re.compile(r"[0-9]{1,19}")


class InvalidParameter(InvalidValue):
    """A bad query parameter or body field; ``field`` names it."""


def _prefix_range(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (for an index range);
    None when there is none (a prefix of U+10FFFF only)."""
    p = prefix.rstrip("\U0010ffff")
    if not p:
        return None
    nxt = ord(p[-1]) + 1
    return p[:-1] + chr(0xE000 if 0xD800 <= nxt <= 0xDFFF else nxt)


@dataclass(frozen=True)
class SuppressionFilter:
    reason: str | None = None
    category: str | None = None
    tenant: str | None = None
    since: float | None = None
    until: float | None = None
    prefix: str | None = None
    active: bool | None = True  # None: both

    def apply(self, q: Select[Any]) -> Select[Any]:
        if self.active is not None:
            q = q.where(S.active.is_(self.active))
        for col, v in ((S.reason, self.reason), (S.category, self.category), (S.tenant, self.tenant)):
            if v is not None:
                q = q.where(col == v)
        if self.since is not None:
            q = q.where(S.created_at >= self.since)
        if self.until is not None:
            q = q.where(S.created_at < self.until)
        if self.prefix:
            upper = _prefix_range(self.prefix)
            q = q.where(S.address >= self.prefix, S.address.startswith(self.prefix, autoescape=True))
            if upper is not None:
                q = q.where(S.address < upper)
        return q


def encode_cursor(key: Any) -> str | None:
    """Opaque page cursors: "123" (after id 123) or "a.<base64>" (after an (address, tenant) pair)."""
    if key is None:
        return None
    if isinstance(key, int):
        return str(key)
    return "a." + base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_cursor(value: str | None) -> Any:
    if not value:
        return 0
    if _ASCII_INT.fullmatch(value) and int(value) <= 2**62:
        return int(value)
    try:
        if value.startswith("a.") and len(value) < 4096:
            a, t = json.loads(base64.urlsafe_b64decode(value[2:] + "=" * (-len(value[2:]) % 4)))
            if isinstance(a, str) and isinstance(t, str) and not control_problem(a + t):
                return (a, t)
    except (ValueError, TypeError, RecursionError):
        pass
    raise InvalidParameter("cursor", "not a cursor returned by this API (next_cursor)")


def page_suppressions(
    engine: Engine, f: SuppressionFilter, after: Any = 0, limit: int = 100
) -> tuple[list[SuppressionRow], Any]:
    """(rows, next cursor key or None): ordered by id, or by (address, tenant) with a prefix filter
    (so the address index serves both the range and the order)."""
    q = f.apply(select(*Suppression.__table__.c))
    if f.prefix:
        if isinstance(after, tuple):
            q = q.where(tuple_(S.address, S.tenant) > tuple_(*after))
        q = q.order_by(S.address, S.tenant)
    else:
        q = q.where(S.id > (after if isinstance(after, int) else 0)).order_by(S.id)
    with engine.connect() as conn:
        rows = [SuppressionRow(*r) for r in conn.execute(q.limit(limit + 1))]
    if len(rows) > limit:
        last = rows[limit - 1]
        return rows[:limit], (last.address, last.tenant) if f.prefix else last.id
    return rows, None


def export_chunk(engine: Engine, f: SuppressionFilter, after: int, limit: int) -> list[Any]:
    """Raw tuples (id, address, tenant, reason, category, created_at, expires_at, source, note, active)."""
    q = (
        f.apply(
            select(
                S.id, S.address, S.tenant, S.reason, S.category, S.created_at, S.expires_at, S.source, S.note, S.active
            )
        )
        .where(S.id > after)
        .order_by(S.id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return list(conn.execute(q).all())


def suppression_dict(r: SuppressionRow) -> dict[str, Any]:
    return {"id": r.id, **r.as_dict()}


def event_dict(m: Any) -> dict[str, Any]:
    out = {
        k: m[k]
        for k in (
            "id",
            "kind",
            "address",
            "tenant",
            "category",
            "reason",
            "hard",
            "status",
            "action",
            "remote_mta",
            "diagnostic",
            "decision",
            "message_id",
        )
    }
    out["created_at"] = iso(m["created_at"])
    return out


def message_meta(m: Any) -> dict[str, Any]:
    return {
        "id": m["id"],
        "received_at": iso(m["received_at"]),
        "queue_id": m["queue_id"],
        "envelope_sender": m["envelope_sender"],
        "envelope_recipient": m["envelope_recipient"],
        "size": m["size"],
        "state": m["state"],
        "kind": m["kind"],
        "raw": f"/messages/{m['id']}",
    }


def why(engine: Engine, address: str, history: int = 50) -> dict[str, Any] | None:
    """Every suppression row for ``address`` with the events (and messages) that caused it, and history."""
    sup = Suppression.__table__
    with engine.connect() as conn:
        rows = [SuppressionRow(*r) for r in conn.execute(select(*sup.c).where(S.address == address).order_by(S.tenant))]
        if not rows:
            return None
        out = []
        for r in rows:
            cause_q = (
                select(Event.__table__)
                .join(SuppressionCause.__table__, SuppressionCause.event_id == E.id)
                .where(SuppressionCause.suppression_id == r.id)
                .order_by(E.id)
            )
            causes = [event_dict(e._mapping) for e in conn.execute(cause_q)]
            mids = sorted({c["message_id"] for c in causes if c["message_id"] is not None})
            msgs = {}
            if mids:
                mq = select(*[c for c in RawMessage.__table__.c if c.name != "content"]).where(RawMessage.id.in_(mids))
                msgs = {m.id: message_meta(m._mapping) for m in conn.execute(mq)}
            for c in causes:
                c["message"] = msgs.get(c["message_id"])
            out.append({**suppression_dict(r), "causes": causes})
        ch = Change.__table__.c
        hist = conn.execute(
            select(ch.id, ch.tenant, ch.active, ch.reason, ch.changed_at)
            .where(ch.kind == "suppression", ch.address == address)
            .order_by(ch.id.desc())
            .limit(history)
        ).all()
    return {
        "address": address,
        "suppressions": out,
        "history": [
            {
                "change_id": h.id,
                "tenant": h.tenant,
                "action": "added" if h.active else "removed",
                "reason": h.reason,
                "at": iso(h.changed_at),
            }
            for h in reversed(hist)
        ],
    }


_WITHHELD = ("uncorroborated", "unverified", "no-tenant", "bad-verp")


def withheld(engine: Engine, address: str) -> dict[str, int]:
    """How many of ``address``'s events the trust gate withheld from suppressing, by decision."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(E.decision, func.count()).where(E.address == address, E.decision.in_(_WITHHELD)).group_by(E.decision)
        ).all()
    return {decision: n for decision, n in sorted(rows)}


def raw_message(engine: Engine, message_id: int) -> bytes | None:
    with engine.connect() as conn:
        content = conn.execute(select(RawMessage.content).where(RawMessage.id == message_id)).scalar()
    return None if content is None else zlib.decompress(content)


@dataclass(frozen=True)
class EventFilter:
    kind: str | None = None
    address: str | None = None
    tenant: str | None = None
    category: str | None = None
    since: float | None = None
    until: float | None = None

    def apply(self, q: Select[Any]) -> Select[Any]:
        for col, v in (
            (E.kind, self.kind),
            (E.address, self.address),
            (E.tenant, self.tenant),
            (E.category, self.category),
        ):
            if v is not None:
                q = q.where(col == v)
        if self.since is not None:
            q = q.where(E.created_at >= self.since)
        if self.until is not None:
            q = q.where(E.created_at < self.until)
        return q


def page_events(
    engine: Engine,
    f: EventFilter,
    after: int = 0,
    limit: int = 100,
) -> tuple[list[dict[str, Any]], int | None]:
    q = f.apply(select(Event.__table__)).where(E.id > after).order_by(E.id).limit(limit + 1)
    with engine.connect() as conn:
        rows = [event_dict(r._mapping) for r in conn.execute(q)]
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1]["id"]
    return rows, None


def stats(engine: Engine, since: float, until: float) -> dict[str, Any]:
    """Counts over [since, until): events by kind, category and tenant; suppressions added by category and tenant."""
    eq = (
        select(E.kind, E.category, E.tenant, func.count())
        .where(E.created_at >= since, E.created_at < until)
        .group_by(E.kind, E.category, E.tenant)
        .order_by(E.kind, E.category, E.tenant)
    )
    sq = (
        select(S.category, S.tenant, func.count())
        .where(S.created_at >= since, S.created_at < until)
        .group_by(S.category, S.tenant)
        .order_by(S.category, S.tenant)
    )
    with engine.connect() as conn:
        ev = [{"kind": k, "category": c, "tenant": t, "count": n} for k, c, t, n in conn.execute(eq)]
        su = [{"category": c, "tenant": t, "count": n} for c, t, n in conn.execute(sq)]
        active = conn.execute(select(func.count()).select_from(Suppression).where(S.active.is_(True))).scalar_one()
    return {
        "since": iso(since),
        "until": iso(until),
        "events": ev,
        "suppressions_added": su,
        "active_suppressions": active,
    }


def limit_usage(
    cfg: Any, key: str, tats: Mapping[str, float | None] | None, engine: Engine | None, now: float | None = None
) -> list[dict[str, Any]]:
    """Use and remaining quota per window of ``key`` (RULE:VALUE); ``tats`` from a live limiter, else the DB."""
    from sidecar import ratelimit
    from sidecar.policy.limits import compile_rule, human_duration
    from sidecar.store.counters import counters_for

    check_text("key", key, 512)  # stored by a reset (the change feed's limit-reset rows)
    name = key.partition(":")[0]
    rule = next((compile_rule(r) for r in cfg.ratelimit.rules if r.name == name), None)
    if rule is None or ":" not in key:
        known = ", ".join(r.name for r in cfg.ratelimit.rules) or "none configured"
        raise InvalidParameter("key", f"{key!r}: expected RULE:VALUE with a configured rule ({known})")
    now = time.time() if now is None else now
    if tats is None:
        if engine is None:
            raise ValueError("limit_usage: neither live counters nor a database given")
        tats = dict(counters_for(engine, key))
    out = []
    for i, w in enumerate(rule.windows):
        used, remaining = ratelimit.usage(w, tats.get(f"{key}#{i}"), now)
        out.append(
            {
                "key": key,
                "rule": name,
                "window": f"{w.rate}/{human_duration(w.per)}",
                "rate": w.rate,
                "per": w.per,
                "burst": w.burst,
                "capacity": w.capacity,
                "used": used,
                "remaining": remaining,
            }
        )
    return out
