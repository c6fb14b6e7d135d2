from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text, true
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import MAX_CENTS, Base, UTCDateTime, utcnow


class User(UserMixin, Base):
    """A person who logs in: a customer, or an admin (role).

    Customer-scoped rows reference `users.id` as `customer_id`. The cached balances are
    maintained only by app.billing.ledger in the same transaction as the ledger entry;
    they always equal the sum of the customer's ledger entries per account.
    """

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("cash_balance_cents >= 0", name="cash_not_negative"),
        CheckConstraint("voucher_balance_cents >= 0", name="voucher_not_negative"),
        CheckConstraint(f"cash_balance_cents <= {MAX_CENTS}", name="cash_max"),
        CheckConstraint(f"voucher_balance_cents <= {MAX_CENTS}", name="voucher_max"),
        Index("uq_users_external_ref", "external_ref", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set when the owner opened the emailed link (or an admin/CLI created the account); no login before.
    email_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # billing profile (printed on invoices)
    name: Mapped[str | None] = mapped_column(String(200))
    company: Mapped[str | None] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(Text)
    postcode: Mapped[str | None] = mapped_column(String(20))
    city: Mapped[str | None] = mapped_column(String(120))
    country: Mapped[str | None] = mapped_column(String(2))
    vat_id: Mapped[str | None] = mapped_column(String(40))
    # the provisioning platform's own id for this customer, set by it through the API (unique when set)
    external_ref: Mapped[str | None] = mapped_column(String(120))

    # cached balances, minor units
    cash_balance_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    voucher_balance_cents: Mapped[int] = mapped_column(BigInteger, default=0)

    # blocks deploying (SPEC §9): an admin hold, or an open card dispute
    on_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    hold_reason: Mapped[str | None] = mapped_column(Text)
    disputed: Mapped[bool] = mapped_column(Boolean, default=False)

    # email preferences: receipts (payments, top-ups) may be turned off; failures, deletions and
    # security notices always go out (app.billing.notifications)
    email_receipts: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())

    @property
    def role(self) -> str:
        return "admin" if self.is_admin else "customer"


class PasswordResetToken(Base):
    """A one-time reset token; only its SHA-256 is stored. A newer token, a reset or a password
    change sets `used_at` on every earlier one, so at most one token of a user works at a time."""

    __tablename__ = "password_reset_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EmailVerificationToken(Base):
    """A one-time email-verification token sent at sign-up; only its SHA-256 is stored."""

    __tablename__ = "email_verification_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UserSession(Base):
    """A signed-in browser. The session cookie carries a random id whose SHA-256 is stored here;
    every request checks that the row is live, so ending the row ends the session wherever the
    cookie is (logout, password change or reset, "sign out everywhere", idle or age limits)."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    user_agent: Mapped[str | None] = mapped_column(String(300))
    ip_address: Mapped[str | None] = mapped_column(String(64))
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(32))
