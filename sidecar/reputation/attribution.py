"""Which tenant a hard bounce or complaint counts against: from our own data only.

In order: the tenant in the message's valid (signed) VERP token; the tenant the policy server
saw with the original message's Postfix queue id at END-OF-MESSAGE (``X-Postfix-Queue-ID`` in
Postfix's DSNs), when the record of recipients does not name other tenants for the address;
the one tenant the record of recipients names for the address. Nothing else counts: a
message without one of these is recorded as usual and counts against nobody.

Only what the ingester newly suppressed counts (the suppression was added, not already
there): a second report about the same address (a repeat, a forgery) counts nothing more.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection

from sidecar import metrics
from sidecar.reputation import store

# The hard-bounce categories that say the recipient does not exist (not blocks, not full mailboxes).
HARD_CATEGORIES = frozenset({"invalid-recipient", "dns"})
_QUEUE_ID = re.compile(rb"^X-Postfix-Queue-ID:[ \t]*([0-9A-Za-z]{5,32})[ \t]*\r?$", re.MULTILINE | re.IGNORECASE)
SCAN = 256 * 1024  # the delivery-status part comes early


def original_queue_id(raw: bytes) -> str:
    """The original message's Postfix queue id named by a Postfix DSN, or ""."""
    m = _QUEUE_ID.search(raw, 0, SCAN)
    return m.group(1).decode("ascii") if m else ""


def counted_queue_id(cfg: Any, raw: bytes) -> str | None:
    """The original queue id a recorded message counts under ("" if none); None when reputation is off."""
    rep = getattr(cfg, "reputation", None)
    if rep is None or not rep.enabled:
        return None
    return original_queue_id(raw)


def tenant_for(
    conn: Connection, verp_tenant: str, record_tenants: Iterable[str], queue_id: str, since: float
) -> str | None:
    known = frozenset(record_tenants)
    if verp_tenant:
        return verp_tenant
    if queue_id:
        t = store.tenant_for_queue_id(conn, queue_id, since)
        if t is not None and (not known or t in known):
            return t
    return next(iter(known)) if len(known) == 1 else None


def kind_of(f: Any) -> str | None:
    """ "hard_bounces", "complaints", or None for a finding that does not count."""
    if f.kind == "complaint":
        return "complaints"
    if f.kind == "bounce" and f.hard and f.category in HARD_CATEGORIES and not (f.status or "").startswith("4"):
        return "hard_bounces"
    return None


def count(conn: Connection, items: Iterable[tuple[str, str]], when: float) -> None:
    """Add (tenant, kind) items to the tenant's bucket of the hour ``when`` falls in."""
    counts: dict[tuple[str, int], tuple[int, int, int]] = {}
    hour = store.hour_of(when)
    for tenant, kind in items:
        s, b, c = counts.get((tenant, hour), (0, 0, 0))
        counts[(tenant, hour)] = (s, b + (kind == "hard_bounces"), c + (kind == "complaints"))
        metrics.REPUTATION_COUNTED.labels(kind).inc()
    store.add_counts(conn, counts)


def for_finding(
    conn: Connection,
    f: Any,
    verified: bool,
    standings: dict[str, Any] | None,
    added: list[str],
    queue_id: str,
    since: float,
) -> list[tuple[str, str]]:
    """(tenant, kind) to count for a finding that newly suppressed in the ``added`` scopes."""
    kind = kind_of(f)
    if kind is None:
        return []
    if kind == "complaints" and "" not in added:
        return [(t, kind) for t in added]  # tenant scopes: the tenants our own data knows
    record = standings.get(f.address) if standings else None
    tenant = tenant_for(conn, f.tenant if verified else "", record.tenants if record else (), queue_id, since)
    return [] if tenant is None else [(tenant, kind)]
