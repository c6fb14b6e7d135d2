from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class SettlementRequest(Base):
    """Outbox row: "this customer's invoices need settling".

    Written in the same transaction as whatever brought the funds, so a lost RQ job or a
    Redis outage loses nothing: the periodic sweep settles every customer that still has a row.
    One row per customer (triggers coalesce); the settlement job deletes it when done, unless it
    was requested again meanwhile (`generation` moved).
    """

    __tablename__ = "settlement_requests"

    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=1)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ChargeAttempt(Base):
    """One off-session card charge for an invoice, recorded *before* Stripe is called.

    status: pending (recorded, Stripe not yet answered) → succeeded | declined | requires_action
    | failed, or unknown (timeout/5xx: a reconciler asks Stripe with the same key, never charges anew).
    """

    __tablename__ = "charge_attempts"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'succeeded', 'declined', 'requires_action', 'failed', 'unknown')",
            name="status",
        ),
        Index("ix_charge_attempts_customer_created", "customer_id", "created_at"),  # the activity list
        # the settlement sweep (every 5 s) looks only for these
        Index("ix_charge_attempts_unresolved", "updated_at", postgresql_where=text("status IN ('pending', 'unknown')"),
              sqlite_where=text("status IN ('pending', 'unknown')")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"))
    attempt_no: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    payment_intent_id: Mapped[str | None] = mapped_column(String(120), index=True)
    error_code: Mapped[str | None] = mapped_column(String(80))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
