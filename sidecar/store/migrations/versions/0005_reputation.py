"""reputation: hourly counts per tenant, levels, queue ids seen at END-OF-MESSAGE

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "reputation_counts",
        sa.Column("tenant", sa.String(length=255), nullable=False),
        sa.Column("hour", sa.Integer(), nullable=False),
        sa.Column("sends", sa.BigInteger(), nullable=False),
        sa.Column("hard_bounces", sa.BigInteger(), nullable=False),
        sa.Column("complaints", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "hour", name=op.f("pk_reputation_counts")),
    )
    op.create_index("ix_reputation_counts_hour", "reputation_counts", ["hour"])
    op.create_table(
        "reputation_tenants",
        sa.Column("tenant", sa.String(length=255), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("since", sa.Float(), nullable=False),
        sa.Column("calm_since", sa.Float(), nullable=True),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("exempt", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", name=op.f("pk_reputation_tenants")),
    )
    op.create_table(
        "reputation_messages",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("queue_id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=255), nullable=False),
        sa.Column("node", sa.String(length=255), nullable=False),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reputation_messages")),
    )
    op.create_index("ix_reputation_messages_queue_id", "reputation_messages", ["queue_id"])
    op.create_index("ix_reputation_messages_held", "reputation_messages", ["tenant", "held"])
    op.create_index("ix_reputation_messages_created_at", "reputation_messages", ["created_at"])


def downgrade() -> None:
    op.drop_table("reputation_messages")
    op.drop_table("reputation_tenants")
    op.drop_index("ix_reputation_counts_hour", table_name="reputation_counts")
    op.drop_table("reputation_counts")
