"""webhooks outbox and indexes for the management API's list filters

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# (table, index name, columns): keyset pagination is by id, so each filter gets (filter, id).
INDEXES = [
    ("suppressions", "ix_suppressions_reason_id", ["reason", "id"]),
    ("suppressions", "ix_suppressions_category_id", ["category", "id"]),
    ("suppressions", "ix_suppressions_tenant_id", ["tenant", "id"]),
    ("suppressions", "ix_suppressions_tenant_reason_id", ["tenant", "reason", "id"]),
    ("events", "ix_events_kind_id", ["kind", "id"]),
    ("events", "ix_events_tenant_id", ["tenant", "id"]),
]


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("subscription", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=1), nullable=False),
        sa.Column("source_id", sa.BigInteger(), nullable=False),
        sa.Column("address", sa.String(length=512), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("last_attempt_at", sa.Float(), nullable=True),
        sa.Column("delivered_at", sa.Float(), nullable=True),
        sa.Column("response_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("subscription", "source", "source_id", name="uq_webhook_deliveries_source"),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_deliveries_order", "webhook_deliveries", ["subscription", "address", "id"])
    op.create_table(
        "webhook_cursors",
        sa.Column("subscription", sa.String(length=255), nullable=False),
        sa.Column("events_id", sa.BigInteger(), nullable=False),
        sa.Column("changes_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("subscription", name=op.f("pk_webhook_cursors")),
    )
    for table, name, cols in INDEXES:
        op.create_index(name, table, cols)


def downgrade() -> None:
    for table, name, _cols in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    op.drop_table("webhook_cursors")
    op.drop_index("ix_webhook_deliveries_order", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
