"""Vouchers and redemptions (vouchers issue).

Only a SHA-256 of each normalised code is stored (`code_hash`), plus its first group
(`code_prefix`, 4 of 20 characters) so admins can tell vouchers apart; see app.billing.vouchers
for why that is enough. The redemption count and "one redemption per customer" are enforced by
PostgreSQL itself: a CHECK on the count, a conditional UPDATE in the service, and a unique
(voucher_id, customer_id) on redemptions.
"""

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import MAX_CENTS, Base, UTCDateTime, utcnow


class VoucherBatch(Base):
    """One admin "create vouchers" action (a single voucher is a batch of one).

    `request_key` is unique: submitting the same create form twice creates nothing new.
    """

    __tablename__ = "voucher_batches"
    __table_args__ = (
        CheckConstraint("count > 0", name="count_positive"),
        CheckConstraint("value_cents > 0", name="value_positive"),
        CheckConstraint(f"value_cents <= {MAX_CENTS}", name="value_max"),
        CheckConstraint("max_redemptions > 0", name="max_redemptions_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_key: Mapped[str] = mapped_column(String(64), unique=True)
    count: Mapped[int] = mapped_column(Integer)
    value_cents: Mapped[int] = mapped_column(BigInteger)
    max_redemptions: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Voucher(Base):
    __tablename__ = "vouchers"
    __table_args__ = (
        CheckConstraint("value_cents > 0", name="value_positive"),
        CheckConstraint(f"value_cents <= {MAX_CENTS}", name="value_max"),
        CheckConstraint("max_redemptions > 0", name="max_redemptions_positive"),
        CheckConstraint("redemptions_count >= 0 AND redemptions_count <= max_redemptions", name="count_range"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("voucher_batches.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    code_prefix: Mapped[str] = mapped_column(String(8))
    value_cents: Mapped[int] = mapped_column(BigInteger)
    max_redemptions: Mapped[int] = mapped_column(Integer)
    redemptions_count: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(String(500))
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    batch: Mapped[VoucherBatch] = relationship()

    @property
    def display_code(self) -> str:
        return f"{self.code_prefix}-…"

    def status(self, now: datetime | None = None) -> str:
        now = now or utcnow()
        if self.disabled_at is not None:
            return "disabled"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        if self.redemptions_count >= self.max_redemptions:
            return "exhausted"
        return "active"


class VoucherRedemption(Base):
    """A customer redeemed a voucher: at most one per (voucher, customer)."""

    __tablename__ = "voucher_redemptions"
    __table_args__ = (UniqueConstraint("voucher_id", "customer_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    voucher_id: Mapped[int] = mapped_column(ForeignKey("vouchers.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    ledger_entry_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("ledger_entries.id")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
