"""Domain-health change events: rows of the ``events`` table (kind ``domain``), which the webhook
outbox delivers as ``domain.check_changed``.

The row's columns carry: ``address`` the domain, ``reason`` the check, ``status`` its new state,
``action`` the previous one ("" for the first), ``diagnostic`` JSON with the detail, fix and score.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Engine, insert, select

from sidecar.store.models import Event

KIND = "domain"


def event_row(
    domain: str, check: str, state: str, before: str | None, detail: str, fix: str, score: int | None
) -> dict[str, Any]:
    return {
        "kind": KIND,
        "created_at": time.time(),
        "address": domain[:320],
        "tenant": "",
        "reason": check[:64],
        "category": "domain-health",
        "status": state,
        "action": before or "",
        "diagnostic": json.dumps({"detail": detail, "fix": fix, "score": score}),
    }


def write_events(engine: Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(Event), rows)


def load_known(engine: Engine) -> dict[tuple[str, str], str]:
    """The last recorded state of each (domain, check), from the change events."""
    t = Event.__table__
    known: dict[tuple[str, str], str] = {}
    with engine.connect() as conn:
        for row in conn.execute(select(t.c.address, t.c.reason, t.c.status).where(t.c.kind == KIND).order_by(t.c.id)):
            known[(row.address or "", row.reason or "")] = row.status or ""
    return known


def event_data(row: Any) -> dict[str, Any]:
    """The ``domain.check_changed`` webhook's ``data`` from its event row."""
    try:
        extra = json.loads(row.diagnostic or "{}")
    except ValueError:
        extra = {}
    return {
        "domain": row.address,
        "check": row.reason,
        "state": row.status,
        "previous": row.action or None,
        "detail": extra.get("detail", ""),
        "fix": extra.get("fix", ""),
        "score": extra.get("score"),
    }
