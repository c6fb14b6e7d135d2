from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import MAX_CENTS, Base, UTCDateTime, utcnow

INVOICE_STATES = ("draft", "open", "paid", "void", "uncollectible")
PAYMENT_SOURCES = ("voucher", "cash", "card", "bank_transfer", "credit_note")


class Invoice(Base):
    """An invoice. Once issued (state != draft) its lines, totals and number never change;
    only `state`, `paid_cents` and the state timestamps move (see app.billing.invoices)."""

    __tablename__ = "invoices"
    __table_args__ = (
        # one invoice per customer, period and end: a month-to-date invoice ends "now", the one for the
        # rest of the month at the period's end (app.billing.monthly)
        UniqueConstraint("billing_period", "customer_id", "period_end"),
        UniqueConstraint("number_year", "number_seq"),
        CheckConstraint("state IN ('draft', 'open', 'paid', 'void', 'uncollectible')", name="state"),
        CheckConstraint("paid_cents >= 0 AND paid_cents <= total_cents", name="paid_range"),
        CheckConstraint(f"total_cents <= {MAX_CENTS} AND subtotal_cents <= {MAX_CENTS}", name="total_max"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="draft", index=True)
    number: Mapped[str | None] = mapped_column(String(20), unique=True)
    number_year: Mapped[int | None] = mapped_column(Integer)
    number_seq: Mapped[int | None] = mapped_column(Integer)
    # "2026-10" for a usage invoice of October 2026; NULL for hand-made invoices. [period_start, period_end)
    # is the time it bills: the whole month, or up to the moment it was issued during the month.
    billing_period: Mapped[str | None] = mapped_column(String(7))
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    currency: Mapped[str] = mapped_column(String(3))
    subtotal_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    tax_rate: Mapped[Decimal] = mapped_column(Numeric(6, 4), default=Decimal("0"))
    tax_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    total_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    paid_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    # buyer details, frozen at issue time
    buyer_name: Mapped[str | None] = mapped_column(String(200))
    buyer_company: Mapped[str | None] = mapped_column(String(200))
    buyer_address: Mapped[str | None] = mapped_column(String(1000))
    buyer_postcode: Mapped[str | None] = mapped_column(String(20))
    buyer_city: Mapped[str | None] = mapped_column(String(120))
    buyer_country: Mapped[str | None] = mapped_column(String(2))
    buyer_vat_id: Mapped[str | None] = mapped_column(String(40))
    buyer_email: Mapped[str | None] = mapped_column(String(254))
    # seller details (configuration), frozen at issue time too
    seller_name: Mapped[str | None] = mapped_column(String(200))
    seller_address: Mapped[str | None] = mapped_column(String(500))
    seller_country: Mapped[str | None] = mapped_column(String(2))
    seller_vat_id: Mapped[str | None] = mapped_column(String(40))
    # no VAT charged: the B2B buyer in another EU country accounts for it (app.billing.tax)
    reverse_charge: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # issue date + PAYMENT_TERMS_DAYS, fixed at issue
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    lines: Mapped[list["InvoiceLine"]] = relationship(
        back_populates="invoice", order_by="InvoiceLine.position", cascade="all, delete-orphan"
    )
    payments: Mapped[list["InvoicePayment"]] = relationship(
        back_populates="invoice", order_by="InvoicePayment.id"
    )

    @property
    def amount_due_cents(self) -> int:
        return self.total_cents - self.paid_cents


class InvoiceLine(Base):
    """One line of an invoice. A usage line names its deployment and the running seconds it bills:
    those seconds are billed, so a deployment's unbilled seconds are its running seconds minus the
    seconds of its lines (at most one line per deployment and invoice)."""

    __tablename__ = "invoice_lines"
    __table_args__ = (UniqueConstraint("deployment_id", "invoice_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    description: Mapped[str] = mapped_column(String(300))
    plan_name: Mapped[str | None] = mapped_column(String(120))
    # lookups by deployment use the unique (deployment_id, invoice_id) index
    deployment_id: Mapped[int | None] = mapped_column(ForeignKey("deployments.id"))
    seconds: Mapped[int | None] = mapped_column(BigInteger)
    hourly_price: Mapped[Decimal | None] = mapped_column(Numeric(18, 6))
    amount_cents: Mapped[int] = mapped_column(BigInteger)

    invoice: Mapped[Invoice] = relationship(back_populates="lines")


class InvoicePayment(Base):
    """Money applied to an invoice, per source. Append-only."""

    __tablename__ = "invoice_payments"
    __table_args__ = (
        CheckConstraint(
            "source IN ('voucher', 'cash', 'card', 'bank_transfer', 'credit_note')", name="source"
        ),
        CheckConstraint("amount_cents > 0", name="positive"),
        Index("ix_invoice_payments_customer_created", "customer_id", "created_at"),  # the activity list
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    source: Mapped[str] = mapped_column(String(16))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    ledger_entry_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_entries.id"), unique=True)
    charge_attempt_id: Mapped[int | None] = mapped_column(ForeignKey("charge_attempts.id"), unique=True)
    payment_intent_id: Mapped[str | None] = mapped_column(String(120))
    reference: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    invoice: Mapped[Invoice] = relationship(back_populates="payments")


class InvoiceNumberCounter(Base):
    """Last number used per year; incremented under a row lock so numbers are gapless."""

    __tablename__ = "invoice_number_counters"

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
