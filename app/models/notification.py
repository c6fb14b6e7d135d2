"""Customer notifications (emails), recorded before they are sent (issue 12, SPEC §15).

One row per notification, unique on `key` (e.g. "invoice-issued:42"), written in the same
transaction as the event that causes it (an outbox). A send job claims the row
(`pending` → `sending`), sends it and marks it `sent`; a failed send goes back to `pending` with a
later `next_attempt_at`. `skipped` records a receipt the customer turned off; `cancelled` one that
became pointless before it went out (e.g. a "payment failed" for an invoice paid meanwhile).
"""

from datetime import datetime

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow

NOTIFICATION_STATES = ("pending", "sending", "sent", "skipped", "cancelled")


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'sending', 'sent', 'skipped', 'cancelled')", name="status"),
        Index("ix_notifications_status_next_attempt", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    key: Mapped[str] = mapped_column(String(200), unique=True)
    subject: Mapped[str] = mapped_column(String(300))
    template: Mapped[str] = mapped_column(String(80))
    context: Mapped[dict] = mapped_column(JSON)
    # what to attach, rendered at send time: ["invoice_pdf", 42]
    attachment: Mapped[list | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    to_email: Mapped[str | None] = mapped_column(String(254))
    message_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    skipped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
