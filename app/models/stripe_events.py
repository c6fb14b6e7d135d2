"""Processed Stripe events, top-ups, disputes and cash refunds (Stripe issue)."""

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class StripeEvent(Base):
    """One row per Stripe event id ever received (webhook or reconciliation).

    Inserted *first*, in the same transaction as the event's effects: the primary key makes a
    concurrent duplicate wait and then do nothing, so every event is applied exactly once.
    `outcome` is `applied`, or `ignored` (a type Paydesk does not act on, or a malformed event:
    `note` says what was wrong, and `id` is derived from the payload when the event's own is unusable).
    """

    __tablename__ = "stripe_events"
    __table_args__ = (CheckConstraint("outcome IN ('applied', 'ignored')", name="outcome"),)

    id: Mapped[str] = mapped_column(String(120), primary_key=True)
    type: Mapped[str] = mapped_column(String(80))
    created: Mapped[int] = mapped_column(BigInteger, index=True)  # Stripe's unix timestamp
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    source: Mapped[str] = mapped_column(String(16), default="webhook")  # webhook | reconcile
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    outcome: Mapped[str] = mapped_column(String(16), default="applied", server_default="applied")
    note: Mapped[str | None] = mapped_column(String(300))


class Topup(Base):
    """A balance top-up paid through Checkout, recorded once per payment intent when credited."""

    __tablename__ = "topups"
    __table_args__ = (
        CheckConstraint("amount_cents > 0", name="positive"),
        CheckConstraint("refunded_cents >= 0 AND refunded_cents <= amount_cents", name="refunded_range"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    payment_intent_id: Mapped[str] = mapped_column(String(120), unique=True)
    checkout_session_id: Mapped[str | None] = mapped_column(String(120))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    refunded_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    ledger_entry_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_entries.id"))
    disputed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def refundable_cents(self) -> int:
        return self.amount_cents - self.refunded_cents


class PaymentDispute(Base):
    """A card dispute (chargeback). While one is open, the customer is flagged (`users.disputed`)."""

    __tablename__ = "payment_disputes"

    id: Mapped[str] = mapped_column(String(120), primary_key=True)  # Stripe dispute id
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    charge_id: Mapped[str | None] = mapped_column(String(120))
    payment_intent_id: Mapped[str | None] = mapped_column(String(120), index=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CashRefund(Base):
    """Part of an admin refund of unspent cash (one Stripe refund against one top-up), or the card
    part of a credit note refunded to the card that paid the invoice (`credit_note_id`, no top-up).

    Written (with its negative cash ledger entry) and committed *before* Stripe is called; the
    Stripe call uses `idempotency_key`, so a retry never refunds twice.
    status: pending → succeeded | failed (failed parts are credited back to the cash balance).
    """

    __tablename__ = "cash_refunds"
    __table_args__ = (
        CheckConstraint("amount_cents > 0", name="positive"),
        CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    topup_id: Mapped[int | None] = mapped_column(ForeignKey("topups.id"), index=True)
    credit_note_id: Mapped[int | None] = mapped_column(ForeignKey("credit_notes.id"), index=True)
    payment_intent_id: Mapped[str] = mapped_column(String(120))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    request_key: Mapped[str] = mapped_column(String(120), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    reason: Mapped[str] = mapped_column(Text)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    stripe_refund_id: Mapped[str | None] = mapped_column(String(120))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CardTopup(Base):
    """A top-up charged off-session to a saved card, recorded *before* Stripe is called.

    `idempotency_key` is derived from the customer and the form's one-time request token, so a
    double submit or a retry repeats the same Stripe request instead of charging again.
    status: pending (recorded, Stripe not yet answered) → succeeded | declined | requires_action
    (3-D Secure: the customer is sent to Checkout instead) | failed, or unknown (timeout/5xx: the
    re-drive job asks again with the same key, never charges anew). The balance is credited by
    `credit_topup` (once per payment intent), like a Checkout top-up.
    """

    __tablename__ = "card_topups"
    __table_args__ = (
        CheckConstraint("amount_cents > 0", name="positive"),
        CheckConstraint(
            "status IN ('pending', 'succeeded', 'declined', 'requires_action', 'failed', 'unknown')",
            name="status",
        ),
        Index("ix_card_topups_customer_created", "customer_id", "created_at"),  # the activity list
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    payment_intent_id: Mapped[str | None] = mapped_column(String(120), index=True)
    error_code: Mapped[str | None] = mapped_column(String(80))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
