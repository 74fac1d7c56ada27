"""Migration 0002 and the outbox queries on both databases (SQLite file and a private PostgreSQL)."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert

from sidecar.http import queries
from sidecar.store.db import make_engine, upgrade
from sidecar.store.models import Base, Event
from sidecar.suppression.store import SuppressionStore
from sidecar.webhooks import deliveries, outbox

ALL = frozenset({"bounce.recorded", "suppression.added", "suppression.removed"})


@pytest.mark.postgresql
def test_schema_outbox_and_lists(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    ob = outbox.Outbox(engine, [outbox.Subscription("a", "http://x", "s", ALL)])
    ob.materialise(1.0)
    store = SuppressionStore(engine)
    with engine.begin() as conn:
        conn.execute(insert(Event).values(created_at=5.0, kind="bounce", address="p@example.com", tenant=""))
    store.add("p@example.com", reason="hard bounce", now=6.0)
    store.add("q@example.com", reason="hard bounce", now=6.0)
    assert ob.materialise(10.0) == 3
    assert ob.materialise(11.0) == 0
    claimed = deliveries.claim_due(engine, ["a"], 20.0)
    assert [r["address"] for r in claimed] == ["p@example.com", "q@example.com"]
    deliveries.record_attempt(engine, claimed[0]["id"], 21.0, ok=True, code=204, error=None, next_at=None)
    assert [r["event_type"] for r in deliveries.claim_due(engine, ["a"], 21.0)] == ["suppression.added"]
    rows, nxt = queries.page_suppressions(engine, queries.SuppressionFilter(prefix="p"), 0, 10)
    assert [r.address for r in rows] == ["p@example.com"] and nxt is None
    rows, nxt = queries.page_suppressions(engine, queries.SuppressionFilter(), 0, 1)
    assert nxt == rows[0].id
    rows, nxt = queries.page_suppressions(engine, queries.SuppressionFilter(prefix="@"), 0, 1)
    assert rows == []
    rows, nxt = queries.page_suppressions(engine, queries.SuppressionFilter(prefix="p"), ("o", ""), 1)
    assert [r.address for r in rows] == ["p@example.com"]
    assert queries.stats(engine, 0.0, 100.0)["active_suppressions"] == 2
