"""the record of recipients: per-day Bloom filters per relay node, and each day's tenants

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recipient_filters",
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("node", sa.String(length=255), nullable=False),
        sa.Column("items", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("bits", sa.LargeBinary(), nullable=False),   # last: stamps read without the blob (SQLite)
        sa.PrimaryKeyConstraint("day", "node", name=op.f("pk_recipient_filters")),
    )
    op.create_table(
        "recipient_tenants",
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("day", "tenant", name=op.f("pk_recipient_tenants")),
    )


def downgrade() -> None:
    op.drop_table("recipient_tenants")
    op.drop_table("recipient_filters")
