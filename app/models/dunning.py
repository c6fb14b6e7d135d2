"""Reminders, deletion warnings, runway warnings, grace extensions and outgoing platform webhooks
(dunning issue).

Every email is first *reserved* as a `DunningNotice` row (unique per customer, kind and window)
and only then sent, so running the dunning job many times or concurrently never sends twice:
`pending` → (`sending` while a job holds the claim) → `sent`, or `cancelled` when the debt was
paid before it went out. A failed send goes back to `pending` with a later `next_attempt_at`.
Platform webhooks follow the same outbox pattern (`PlatformWebhookDelivery`).
"""

from datetime import datetime

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow

NOTICE_KINDS = ("reminder", "deletion_warning", "runway_warning")
NOTICE_STATES = ("pending", "sending", "sent", "cancelled")
DELIVERY_STATES = ("pending", "sending", "delivered")


class DunningAccount(Base):
    """Per-customer dunning bookkeeping: when the last reminder/runway warning was reserved
    (conditional updates on these serialise concurrent runs) and an admin's grace extension."""

    __tablename__ = "dunning_accounts"

    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True, autoincrement=False)
    last_reminder_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_runway_warning_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    grace_extended_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deletion_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DunningNotice(Base):
    """One dunning email: what (kind, invoices, details), when (reserved/sent), to whom."""

    __tablename__ = "dunning_notices"
    __table_args__ = (
        UniqueConstraint("customer_id", "kind", "window_key"),
        CheckConstraint("kind IN ('reminder', 'deletion_warning', 'runway_warning')", name="kind"),
        CheckConstraint("status IN ('pending', 'sending', 'sent', 'cancelled')", name="status"),
        Index("ix_dunning_notices_status_next_attempt", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(24))
    window_key: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    to_email: Mapped[str] = mapped_column(String(254))
    invoice_ids: Mapped[list | None] = mapped_column(JSON)
    details: Mapped[dict | None] = mapped_column(JSON)
    reserved_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PlatformWebhookDelivery(Base):
    """An outgoing, signed event for the provisioning platform (outbox row; at-least-once,
    receivers dedupe on `event_id`)."""

    __tablename__ = "platform_webhook_deliveries"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'sending', 'delivered')", name="status"),
        Index("ix_platform_webhook_deliveries_status_next_attempt", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_type: Mapped[str] = mapped_column(String(80))
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    payload: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
