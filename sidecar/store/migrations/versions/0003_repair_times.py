"""repair stored times that are out of range or not finite

Before 0.1.0's input checks, the API, the CLI and CSV import accepted times such as
``expires_at = 1e400`` (infinity), ``-1e300``, a year past 9999 or NaN; one such row made
every listing, "why" and export fail. Times are brought back into 1970-01-01 .. 9999-12-31:
too early becomes 1970-01-01 (an expiry stays in the past); too late, infinite or NaN becomes
NULL where the column allows it (an expiry: never) and 9999-12-31T23:59:59Z where it does not.
Each repaired column is logged with its count. (SQLite already stored NaN as NULL.)

Revision ID: 0003
Revises: 0002
"""
import logging

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

MIN_TIME = 0.0              # 1970-01-01T00:00:00Z
MAX_TIME = 253402300799.0   # 9999-12-31T23:59:59Z (sidecar.units.MAX_TIME, copied: migrations stand alone)

# table -> (time columns that may be NULL, time columns that may not)
COLUMNS = {
    "suppressions": (["expires_at"], ["created_at", "updated_at"]),
    "changes": (["created_at", "expires_at"], ["changed_at"]),
    "events": ([], ["created_at"]),
    "raw_messages": ([], ["received_at"]),
    "ratelimit_counters": ([], ["tat", "updated_at"]),
    "webhook_deliveries": (["last_attempt_at", "delivered_at"], ["created_at", "next_attempt_at"]),
    "webhook_cursors": ([], ["updated_at"]),
}

log = logging.getLogger("sidecar.store")


def upgrade() -> None:
    conn = op.get_bind()
    pg = conn.dialect.name == "postgresql"
    for table, (nullable, required) in COLUMNS.items():
        for name in nullable + required:
            col = sa.column(name, sa.Float)
            t = sa.table(table, col)
            # PostgreSQL orders NaN above every number: "> MAX_TIME" catches it with +infinity.
            high = col > MAX_TIME
            if pg:
                high = sa.or_(high, col == sa.literal(float("nan"), sa.Float))
            n_high = conn.execute(sa.update(t).where(high)
                                  .values({name: None if name in nullable else MAX_TIME})).rowcount
            n_low = conn.execute(sa.update(t).where(col < MIN_TIME).values({name: MIN_TIME})).rowcount
            if n_high or n_low:
                log.warning("migration 0003: %s.%s: repaired %d time(s) past 9999 or not finite (%s) "
                            "and %d before 1970 (set to 1970-01-01)", table, name, n_high,
                            "set to NULL" if name in nullable else "set to 9999-12-31", n_low)


def downgrade() -> None:
    pass   # the repaired values are not kept: nothing to undo
