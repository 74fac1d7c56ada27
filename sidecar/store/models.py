"""SQLAlchemy models: the one schema, shared by SQLite and PostgreSQL.

Timestamps are POSIX seconds (floats): cheap to load by the million at start-up and
identical on both databases.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Integer on SQLite (so it is the rowid alias and autoincrements), BIGINT elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Suppression(Base):
    """Current state of one (address, tenant) pair; tenant "" means global."""

    __tablename__ = "suppressions"
    __table_args__ = (
        UniqueConstraint("address", "tenant", name="uq_suppressions_address_tenant"),
        Index("ix_suppressions_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(320))
    tenant: Mapped[str] = mapped_column(String(255), default="")
    reason: Mapped[str] = mapped_column(String(64))
    category: Mapped[str | None] = mapped_column(String(32), nullable=True)
    source: Mapped[str] = mapped_column(String(32), default="manual")
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Change(Base):
    """Append-only change feed read by every running server (no full reloads).

    kind "suppression": a snapshot of the suppression row after the change.
    kind "limit-reset": ``address`` holds the rate-limit key to clear.
    """

    __tablename__ = "changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(512))
    tenant: Mapped[str] = mapped_column(String(255), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    changed_at: Mapped[float] = mapped_column(Float)


class RawMessage(Base):
    """A message handed to the ingester, zlib-compressed, kept for "why" and replay."""

    __tablename__ = "raw_messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    received_at: Mapped[float] = mapped_column(Float, index=True)
    queue_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    envelope_sender: Mapped[str | None] = mapped_column(String(320), nullable=True)
    envelope_recipient: Mapped[str | None] = mapped_column(String(320), nullable=True)
    extension: Mapped[str | None] = mapped_column(String(255), nullable=True)
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16), index=True)  # parsed | unparsed | not-bounce
    kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    parser_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class Event(Base):
    """One thing that happened to one address: a bounce, delay, complaint, auto-reply ..."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_address_created", "address", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(String(320), nullable=True)
    tenant: Mapped[str] = mapped_column(String(255), default="")
    category: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    hard: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    action: Mapped[str | None] = mapped_column(String(16), nullable=True)
    remote_mta: Mapped[str | None] = mapped_column(String(255), nullable=True)
    diagnostic: Mapped[str | None] = mapped_column(Text, nullable=True)
    decision: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message_id: Mapped[int | None] = mapped_column(
        ForeignKey("raw_messages.id", ondelete="SET NULL"), nullable=True, index=True
    )


class SuppressionCause(Base):
    """Which events caused a suppression: the exact answer to "why is this suppressed"."""

    __tablename__ = "suppression_causes"

    suppression_id: Mapped[int] = mapped_column(ForeignKey("suppressions.id", ondelete="CASCADE"), primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), primary_key=True)


class RateLimitCounter(Base):
    """GCRA state (theoretical arrival time) per rate-limit key and window."""

    __tablename__ = "ratelimit_counters"

    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    tat: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


# -- Webhooks (outbox) -------------------------------------------------------------------------------


class WebhookDelivery(Base):
    """One webhook event for one subscription: the durable outbox.

    Derived from the ``events`` and ``changes`` feeds (``source`` "e" / "c" and ``source_id``)
    by the dispatcher; the unique key makes deriving idempotent (a re-read after a restart
    inserts nothing twice). ``status`` is pending, delivered or dead.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("subscription", "source", "source_id", name="uq_webhook_deliveries_source"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_order", "subscription", "address", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subscription: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(1))
    source_id: Mapped[int] = mapped_column(BigInteger)
    address: Mapped[str] = mapped_column(String(512), default="")
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    last_attempt_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    delivered_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    response_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class WebhookCursor(Base):
    """How far each subscription has read the ``events`` and ``changes`` feeds."""

    __tablename__ = "webhook_cursors"

    subscription: Mapped[str] = mapped_column(String(255), primary_key=True)
    events_id: Mapped[int] = mapped_column(BigInteger, default=0)
    changes_id: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[float] = mapped_column(Float)


# Indexes for the management API's list filters (keyset pagination by id), created by migration 0002.
Index("ix_suppressions_reason_id", Suppression.reason, Suppression.id)
Index("ix_suppressions_category_id", Suppression.category, Suppression.id)
Index("ix_suppressions_tenant_id", Suppression.tenant, Suppression.id)
Index("ix_suppressions_tenant_reason_id", Suppression.tenant, Suppression.reason, Suppression.id)
Index("ix_events_kind_id", Event.kind, Event.id)
Index("ix_events_tenant_id", Event.tenant, Event.id)


# -- The record of recipients (corroboration of bounces) --------------------------------------------


class RecipientFilter(Base):
    """One relay node's Bloom filter of the (tenant, recipient) pairs it let through on one UTC day."""

    __tablename__ = "recipient_filters"

    day: Mapped[int] = mapped_column(Integer, primary_key=True)  # days since the epoch (UTC)
    node: Mapped[str] = mapped_column(String(255), primary_key=True)
    items: Mapped[float] = mapped_column(Float)  # estimated pairs held
    updated_at: Mapped[float] = mapped_column(Float)
    # Last: SQLite reads a row's columns in order, so the stamps are read without the megabytes.
    bits: Mapped[bytes] = mapped_column(LargeBinary)  # rbloom's save_bytes()


class RecipientTenant(Base):
    """The tenants whose pairs a day's filters hold: what the lookup tests for each address."""

    __tablename__ = "recipient_tenants"

    day: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(255), primary_key=True)


# -- Reputation (docs/reputation.md) -----------------------------------------------------------------


class ReputationCount(Base):
    """One tenant's sends, hard bounces and complaints in one UTC hour; every relay adds to it."""

    __tablename__ = "reputation_counts"
    __table_args__ = (Index("ix_reputation_counts_hour", "hour"),)

    tenant: Mapped[str] = mapped_column(String(255), primary_key=True)
    hour: Mapped[int] = mapped_column(Integer, primary_key=True)  # hours since the epoch (UTC)
    sends: Mapped[int] = mapped_column(BigInteger, default=0)
    hard_bounces: Mapped[int] = mapped_column(BigInteger, default=0)
    complaints: Mapped[int] = mapped_column(BigInteger, default=0)


class ReputationTenant(Base):
    """A tenant's level (no row: level 1); ``version`` makes every change a compare-and-set."""

    __tablename__ = "reputation_tenants"

    tenant: Mapped[str] = mapped_column(String(255), primary_key=True)
    level: Mapped[int] = mapped_column(Integer, default=1)
    since: Mapped[float] = mapped_column(Float)
    calm_since: Mapped[float | None] = mapped_column(Float, nullable=True)
    window_start: Mapped[float] = mapped_column(Float, default=0.0)
    exempt: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str] = mapped_column(Text, default="")
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[float] = mapped_column(Float)


class ReputationMessage(Base):
    """A message's Postfix queue id and its tenant, seen at END-OF-MESSAGE: attributes the DSNs
    that name the queue id, and lists the messages held at level 4 (``held``) on each relay."""

    __tablename__ = "reputation_messages"
    __table_args__ = (
        Index("ix_reputation_messages_queue_id", "queue_id"),
        Index("ix_reputation_messages_held", "tenant", "held"),
        Index("ix_reputation_messages_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    queue_id: Mapped[str] = mapped_column(String(32))
    tenant: Mapped[str] = mapped_column(String(255))
    node: Mapped[str] = mapped_column(String(255))
    held: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
