"""What one finding asks for, before the trust gate: the suppression rules of :mod:`.record`.

Hard bounce -> global suppression; complaint -> the tenant's; soft failures counted within
``ingest.soft_window``, ``soft_threshold`` of them -> a global "soft bounces" suppression;
delays, blocks and the rest -> an event only. ``c`` is the ``[ingest]`` configuration.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from sidecar.bounce.derive import Decision, EventKind, Finding
from sidecar.store.models import Event

SOFT_COUNTED = frozenset({"invalid-recipient", "mailbox-full", "dns", "network"})
REASON_HARD, REASON_COMPLAINT, REASON_SOFT = "hard bounce", "complaint", "soft bounces"
# never count as soft bounces
NOT_COUNTED = (Decision.SUPERSEDED, Decision.BAD_VERP, Decision.UNVERIFIED, Decision.UNCORROBORATED)


def decide(
    c: Any, conn: Connection, f: Finding, when: float, ignore: bool = False
) -> tuple[Decision, tuple[str, str, float | None] | None]:
    """(decision, (scope tenant, reason, expires_at) or None): what the message asks for, before
    the trust gate (:mod:`sidecar.bounce.trust`) decides the scopes. Reads the database (soft counts)."""
    if ignore:
        return Decision.BAD_VERP, None
    if f.kind == EventKind.COMPLAINT:
        return Decision.SUPPRESS_COMPLAINT, (f.tenant, REASON_COMPLAINT, None)
    if f.kind != EventKind.BOUNCE:
        return Decision.DELAY if f.kind == EventKind.DELAY else Decision.RECORD, None
    if f.category == "block":
        return Decision.BLOCK, None
    temporary = (f.status or "").startswith("4")
    if f.hard and not temporary:
        exp = when + c.hard_suppression if c.hard_suppression > 0 else None
        return Decision.SUPPRESS_HARD, ("", REASON_HARD, exp)
    if f.hard is False and f.category in SOFT_COUNTED and f.action in (None, "failed"):
        prior = soft_events(c, conn, f.address, when)
        if len(prior) + 1 >= c.soft_threshold:
            return Decision.SUPPRESS_SOFT, ("", REASON_SOFT, when + c.soft_suppression)
        return Decision.SOFT, None
    return Decision.RECORD, None


def soft_events(c: Any, conn: Connection, address: str, when: float) -> list[int]:
    e = Event.__table__.c
    q = (
        select(e.id)
        .where(
            e.address == address,
            e.kind == EventKind.BOUNCE,
            e.hard.is_(False),
            e.category.in_(sorted(SOFT_COUNTED)),
            e.created_at > when - c.soft_window,
            e.created_at <= when,
            e.decision.notin_(NOT_COUNTED),
        )
        .order_by(e.id)
    )
    return list(conn.execute(q).scalars())
