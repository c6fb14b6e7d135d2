from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import MAX_CENTS, Base, UTCDateTime, utcnow

ACCOUNTS = ("cash", "voucher")


class LedgerEntry(Base):
    """One change to a customer's funds. Append-only: never updated, never deleted.

    `idempotency_key` is unique: writing the same key twice is how a repeated event
    (webhook, redirect, job retry) is recognised and ignored.
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint("account IN ('cash', 'voucher')", name="account"),
        CheckConstraint(f"amount_cents BETWEEN -{MAX_CENTS} AND {MAX_CENTS}", name="amount_range"),
        Index("ix_ledger_entries_customer_created", "customer_id", "created_at"),  # the activity list
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    account: Mapped[str] = mapped_column(String(10))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(40))
    reference: Mapped[str | None] = mapped_column(String(200))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    note: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
