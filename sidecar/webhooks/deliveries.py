"""Webhook delivery bookkeeping: what the outbox (sidecar.webhooks.outbox) has materialised.

Claiming due deliveries (first in line per subscription and address, leased), recording an
attempt, the retry schedule, and what the CLI and the API show or change: the list, the
per-subscription summary, the cursors, and redelivery.

All functions are synchronous: the service runs them in its database thread pool, the
CLI and the API call them directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Engine, and_, func, select, update
from sqlalchemy.orm import aliased

from sidecar.store.models import WebhookCursor, WebhookDelivery
from sidecar.units import iso

STATUSES = ("pending", "delivered", "dead")
D = WebhookDelivery.__table__.c


def claim_due(
    engine: Engine,
    subs: Sequence[str],
    now: float,
    *,
    limit: int = 100,
    lease: float = 60.0,
    exclude: Iterable[int] = (),
) -> list[dict[str, Any]]:
    """Pending deliveries that are due and first in line for their (subscription, address).

    Claimed rows get ``next_attempt_at = now + lease``, so a crash mid-delivery only delays them.
    """
    if not subs:
        return []
    earlier = aliased(WebhookDelivery.__table__)
    blocked = (
        select(earlier.c.id)
        .where(
            earlier.c.subscription == D.subscription,
            earlier.c.address == D.address,
            earlier.c.status == "pending",
            earlier.c.id < D.id,
        )
        .exists()
    )
    skip = list(exclude)
    q = (
        select(D.id, D.subscription, D.event_type, D.payload, D.attempts, D.created_at, D.address)
        .where(D.status == "pending", D.next_attempt_at <= now, D.subscription.in_(list(subs)), ~blocked)
        .order_by(D.id)
        .limit(limit)
    )
    if skip:
        q = q.where(D.id.notin_(skip))
    with engine.begin() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
        if rows:
            conn.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_([r["id"] for r in rows]))
                .values(next_attempt_at=now + lease)
            )
    return rows


def record_attempt(
    engine: Engine,
    delivery_id: int,
    now: float,
    *,
    ok: bool,
    code: int | None,
    error: str | None,
    next_at: float | None,
) -> None:
    """After one attempt: delivered; or pending again at ``next_at``; or dead when ``next_at`` is None."""
    values: dict[str, Any] = {
        "attempts": WebhookDelivery.attempts + 1,
        "last_attempt_at": now,
        "response_code": code,
        "last_error": (error or None) and error[:2000],
    }
    if ok:
        values.update(status="delivered", delivered_at=now, last_error=None)
    elif next_at is None:
        values.update(status="dead")
    else:
        values.update(next_attempt_at=next_at)
    with engine.begin() as conn:
        conn.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending")
            .values(**values)
        )


def next_attempt(
    attempts: int, created_at: float, now: float, *, base: float, cap: float, retry_for: float
) -> float | None:
    """When to try again after ``attempts`` failed attempts (exponential), or None: give up (dead)."""
    at = now + min(cap, base * 2 ** max(attempts - 1, 0))
    if now - created_at >= retry_for:
        return None
    return min(at, created_at + retry_for)


def list_deliveries(
    engine: Engine,
    *,
    subscription: str | None = None,
    status: str | None = None,
    event_type: str | None = None,
    address: str | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[dict[str, Any]]:
    q = select(WebhookDelivery.__table__).where(D.id > after_id).order_by(D.id).limit(limit)
    for col, v in (
        (D.subscription, subscription),
        (D.status, status),
        (D.event_type, event_type),
        (D.address, address),
    ):
        if v is not None:
            q = q.where(col == v)
    with engine.connect() as conn:
        return [delivery_dict(r._mapping) for r in conn.execute(q)]


def delivery_dict(m: Any) -> dict[str, Any]:
    return {
        "id": m["id"],
        "subscription": m["subscription"],
        "event_type": m["event_type"],
        "event_id": json.loads(m["payload"])["id"],
        "address": m["address"],
        "status": m["status"],
        "attempts": m["attempts"],
        "created_at": iso(m["created_at"]),
        "next_attempt_at": iso(m["next_attempt_at"]) if m["status"] == "pending" else None,
        "last_attempt_at": iso(m["last_attempt_at"]) or None,
        "delivered_at": iso(m["delivered_at"]) or None,
        "response_code": m["response_code"],
        "last_error": m["last_error"],
    }


def redeliver(
    engine: Engine,
    *,
    from_id: int,
    subscription: str | None = None,
    status: str | None = None,
    to_id: int | None = None,
    now: float,
) -> int:
    """Queue deliveries with id >= ``from_id`` again (all, or only ``status``); returns how many.

    The retry period starts again from now.
    """
    cond = [D.id >= from_id, D.status != "pending"]
    if to_id is not None:
        cond.append(D.id <= to_id)
    if subscription is not None:
        cond.append(D.subscription == subscription)
    if status is not None:
        cond.append(D.status == status)
    with engine.begin() as conn:
        res = conn.execute(
            update(WebhookDelivery)
            .where(and_(*cond))
            .values(status="pending", attempts=0, created_at=now, next_attempt_at=now, last_error=None)
        )
    return int(res.rowcount)


def summary(engine: Engine) -> list[dict[str, Any]]:
    """Per subscription and status: how many deliveries, and the oldest pending one's age."""
    q = (
        select(D.subscription, D.status, func.count(), func.min(D.created_at))
        .group_by(D.subscription, D.status)
        .order_by(D.subscription, D.status)
    )
    with engine.connect() as conn:
        return [{"subscription": s, "status": st, "count": n, "oldest": iso(t)} for s, st, n, t in conn.execute(q)]


def cursors(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [
            {
                "subscription": r.subscription,
                "events_id": r.events_id,
                "changes_id": r.changes_id,
                "updated_at": iso(r.updated_at),
            }
            for r in conn.execute(select(WebhookCursor.__table__))
        ]
