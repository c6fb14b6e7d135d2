"""Spending limits, the limit alerts already sent, and price-change announcements (foresight issue).

`SpendingLimit` holds the customer's own monthly limit and the admin's ceiling (either may be
unset; the effective limit is the lower of the two). `SpendingAlert` is unique per customer,
month and threshold, so a re-run of the check never alerts twice. `PriceChangeNotice` is unique
per price version and customer: one announcement per scheduled price.
"""

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow

ALERT_THRESHOLDS = (50, 80, 100)


class SpendingLimit(Base):
    __tablename__ = "spending_limits"
    __table_args__ = (
        CheckConstraint("customer_limit_cents IS NULL OR customer_limit_cents >= 0", name="customer_limit"),
        CheckConstraint("admin_ceiling_cents IS NULL OR admin_ceiling_cents >= 0", name="admin_ceiling"),
    )

    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True, autoincrement=False)
    customer_limit_cents: Mapped[int | None] = mapped_column(BigInteger)
    admin_ceiling_cents: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def effective_cents(self) -> int | None:
        values = [v for v in (self.customer_limit_cents, self.admin_ceiling_cents) if v is not None]
        return min(values) if values else None


class SpendingAlert(Base):
    """One limit alert (50, 80 or 100 % of the limit) of one customer in one month."""

    __tablename__ = "spending_alerts"
    __table_args__ = (
        UniqueConstraint("customer_id", "period", "threshold"),
        CheckConstraint("threshold IN (50, 80, 100)", name="threshold"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    period: Mapped[str] = mapped_column(String(7))
    threshold: Mapped[int] = mapped_column(Integer)
    spent_cents: Mapped[int] = mapped_column(BigInteger)
    limit_cents: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PriceChangeNotice(Base):
    """A customer was told about one scheduled price version (dashboard notice + one email)."""

    __tablename__ = "price_change_notices"
    __table_args__ = (UniqueConstraint("plan_price_id", "customer_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # a scheduled price an admin cancels takes its notices with it (the dashboard stops showing them)
    plan_price_id: Mapped[int] = mapped_column(ForeignKey("plan_prices.id", ondelete="CASCADE"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    before_monthly_cents: Mapped[int] = mapped_column(BigInteger)
    after_monthly_cents: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
