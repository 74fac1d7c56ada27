"""The reputation tables: hourly counts, levels and queue ids. Synchronous: run in the thread pool.

Every relay adds its counts to the same rows (an upsert that adds), so several relays on
PostgreSQL make one count per tenant. A level changes by compare-and-set on ``version``: when
two relays evaluate the same tenant at once, one change is written and audited, the other is
dropped. Every change writes an ``events`` row of kind ``reputation`` (who, why, from, to,
rates): the audit trail and the source of the ``reputation.*`` webhooks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update

from sidecar.reputation.levels import HOUR, Bucket, TenantState, level_name
from sidecar.store.db import dialect_insert
from sidecar.store.models import Event, ReputationCount, ReputationMessage, ReputationTenant

EVENT_KIND = "reputation"
CHANGED, RELEASED = "changed", "released"  # events.action of a reputation event

# (tenant, hour) -> (sends, hard bounces, complaints)
Counts = Mapping[tuple[str, int], tuple[int, int, int]]


def hour_of(t: float) -> int:
    return math.floor(t / HOUR)


def add_counts(conn: Connection, counts: Counts) -> None:
    """Add ``counts`` to the stored hourly buckets (one upsert per bucket)."""
    if not counts:
        return
    table = ReputationCount.__table__
    ins = dialect_insert(conn, table)
    stmt = ins.on_conflict_do_update(
        index_elements=["tenant", "hour"],
        set_={
            "sends": table.c.sends + ins.excluded.sends,
            "hard_bounces": table.c.hard_bounces + ins.excluded.hard_bounces,
            "complaints": table.c.complaints + ins.excluded.complaints,
        },
    )
    rows = [
        {"tenant": t, "hour": h, "sends": s, "hard_bounces": b, "complaints": c}
        for (t, h), (s, b, c) in sorted(counts.items())  # one order: no deadlock between relays
    ]
    conn.execute(stmt, rows)


def save(engine: Engine, counts: Counts, messages: Iterable[tuple[str, str, str, bool, float]]) -> None:
    """Write a relay's pending counts and (queue id, tenant, node, held, time) rows in one transaction."""
    messages = list(messages)
    with engine.begin() as conn:
        add_counts(conn, counts)
        if messages:
            conn.execute(
                insert(ReputationMessage),
                [{"queue_id": q, "tenant": t, "node": n, "held": h, "created_at": w} for q, t, n, h, w in messages],
            )


def buckets(conn: Connection, since: float, tenant: str | None = None) -> dict[str, list[Bucket]]:
    """{tenant: its buckets from ``since`` on}."""
    c = ReputationCount.__table__.c
    q = select(c.tenant, c.hour, c.sends, c.hard_bounces, c.complaints).where(c.hour >= hour_of(since))
    if tenant is not None:
        q = q.where(c.tenant == tenant)
    out: dict[str, list[Bucket]] = {}
    for t, h, s, b, k in conn.execute(q):
        out.setdefault(t, []).append(Bucket(h, s, b, k))
    return out


@dataclass(frozen=True)
class Stored:
    state: TenantState
    reason: str
    version: int
    updated_at: float


def states(conn: Connection, tenant: str | None = None) -> dict[str, Stored]:
    c = ReputationTenant.__table__.c
    q = select(c.tenant, c.level, c.since, c.calm_since, c.window_start, c.exempt, c.reason, c.version, c.updated_at)
    if tenant is not None:
        q = q.where(c.tenant == tenant)
    return {
        r.tenant: Stored(
            TenantState(r.level, r.since, r.calm_since, r.window_start, bool(r.exempt)),
            r.reason,
            r.version,
            r.updated_at,
        )
        for r in conn.execute(q)
    }


def levels(engine: Engine) -> dict[str, int]:
    """{tenant: level} for the tenants above level 1: what the policy servers keep in memory."""
    c = ReputationTenant.__table__.c
    with engine.connect() as conn:
        return {t: int(lv) for t, lv in conn.execute(select(c.tenant, c.level).where(c.level > 1))}


def write_state(conn: Connection, tenant: str, old: Stored | None, new: TenantState, reason: str, now: float) -> bool:
    """Compare-and-set the tenant's row; False when another writer changed it first."""
    values = {
        "level": int(new.level),
        "since": new.since,
        "calm_since": new.calm_since,
        "window_start": new.window_start,
        "exempt": new.exempt,
        "reason": reason[:1000],
        "updated_at": now,
    }
    table = ReputationTenant.__table__
    if old is None:
        res = conn.execute(
            dialect_insert(conn, table)
            .values(tenant=tenant, version=1, **values)
            .on_conflict_do_nothing(index_elements=["tenant"])
        )
        return bool(res.rowcount)
    res = conn.execute(
        update(ReputationTenant)
        .where(ReputationTenant.tenant == tenant, ReputationTenant.version == old.version)
        .values(version=old.version + 1, **values)
    )
    return bool(res.rowcount)


def audit(
    conn: Connection,
    tenant: str,
    action: str,
    before: int,
    after: int,
    reason: str,
    now: float,
    who: str = "sidecar",
    extra: dict[str, Any] | None = None,
) -> int:
    """The audit event of one change (and the source of its webhook)."""
    data = {"tenant": tenant, "from": before, "to": after, "reason": reason, "by": who, **(extra or {})}
    return int(
        conn.execute(
            insert(Event)
            .values(
                created_at=now,
                kind=EVENT_KIND,
                address=None,
                tenant=tenant,
                category=level_name(after),
                reason=reason[:64],
                action=action,
                decision=f"level {before} -> {after}",
                diagnostic=json.dumps(data, sort_keys=True),
            )
            .returning(Event.id)
        ).scalar_one()
    )


def tenant_for_queue_id(conn: Connection, queue_id: str, since: float) -> str | None:
    """The tenant that sent the message with this Postfix queue id, when exactly one did."""
    c = ReputationMessage.__table__.c
    rows = conn.execute(select(c.tenant).where(c.queue_id == queue_id, c.created_at >= since).distinct().limit(2)).all()
    return rows[0][0] if len(rows) == 1 else None


def held_summary(engine: Engine, node: str) -> tuple[int, float | None]:
    """Messages recorded as held on ``node`` (not yet released or deleted) and the oldest one's time."""
    from sqlalchemy import func

    c = ReputationMessage.__table__.c
    q = select(func.count(), func.min(c.created_at)).where(c.held.is_(True), c.node == node)
    with engine.connect() as conn:
        n, oldest = conn.execute(q).one()
    return int(n or 0), (float(oldest) if oldest is not None else None)


def held_ids(conn: Connection, tenant: str, node: str) -> list[str]:
    c = ReputationMessage.__table__.c
    q = select(c.queue_id).where(c.tenant == tenant, c.held.is_(True), c.node == node).order_by(c.id)
    return list(dict.fromkeys(conn.execute(q).scalars()))


def clear_held(conn: Connection, tenant: str, node: str) -> int:
    return int(
        conn.execute(
            update(ReputationMessage)
            .where(ReputationMessage.tenant == tenant, ReputationMessage.held.is_(True), ReputationMessage.node == node)
            .values(held=False)
        ).rowcount
    )


def held_counts(conn: Connection) -> dict[str, int]:
    from sqlalchemy import func

    c = ReputationMessage.__table__.c
    q = select(c.tenant, func.count()).where(c.held.is_(True)).group_by(c.tenant)
    return {t: int(n) for t, n in conn.execute(q)}


def prune(engine: Engine, now: float, retention: float) -> tuple[int, int]:
    """Drop counts and queue ids older than ``retention`` (held messages stay until released)."""
    before = now - retention
    with engine.begin() as conn:
        n = conn.execute(delete(ReputationCount).where(ReputationCount.hour < hour_of(before))).rowcount
        m = conn.execute(
            delete(ReputationMessage).where(ReputationMessage.created_at < before, ReputationMessage.held.is_(False))
        ).rowcount
    return int(n), int(m)
