from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class BillingCustomer(Base):
    """Maps a Paydesk customer to its Stripe customer, so every Stripe event maps back."""

    __tablename__ = "billing_customers"

    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    stripe_customer_id: Mapped[str] = mapped_column(String(120), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Card(Base):
    """A card recorded from Stripe's own data. Never holds a card number.

    Removed cards keep their row (`removed_at`) so past charge attempts still point somewhere;
    fingerprints are unique per customer among cards that are not removed.
    """

    __tablename__ = "cards"
    __table_args__ = (
        Index(
            "uq_cards_active_fingerprint",
            "customer_id",
            "fingerprint",
            unique=True,
            postgresql_where=text("removed_at IS NULL"),
            sqlite_where=text("removed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    stripe_payment_method_id: Mapped[str] = mapped_column(String(120), unique=True)
    fingerprint: Mapped[str] = mapped_column(String(120))
    brand: Mapped[str] = mapped_column(String(30))
    last4: Mapped[str] = mapped_column(String(4))
    exp_month: Mapped[int] = mapped_column(Integer)
    exp_year: Mapped[int] = mapped_column(Integer)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def is_expired(self, now: datetime) -> bool:
        return (self.exp_year, self.exp_month) < (now.year, now.month)
