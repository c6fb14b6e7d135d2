"""Credit notes (SPEC §7): corrections of an issued invoice, never edits of it."""

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, UTCDateTime, utcnow


class CreditNote(Base):
    """An issued credit note. Created already issued (number, lines, totals and where the money
    went are written once, in one transaction) and never changed afterwards.

    Where the credit went: `applied_to_due_cents` lowered what the invoice still owed (an
    `InvoicePayment` with source `credit_note`); the rest went back to the sources that paid the
    invoice — `returned_voucher_cents` to the voucher balance, `returned_cash_cents` (cash and bank
    transfer parts) to the cash balance, `returned_card_cents` (card parts) to the cash balance or,
    when `card_refund` is set, refunded to the card (`cash_refunds` rows)."""

    __tablename__ = "credit_notes"
    __table_args__ = (
        UniqueConstraint("number_year", "number_seq"),
        CheckConstraint("total_cents > 0", name="positive"),
        CheckConstraint(
            "applied_to_due_cents + returned_voucher_cents + returned_cash_cents + returned_card_cents = total_cents",
            name="allocated",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    number: Mapped[str] = mapped_column(String(24), unique=True)
    number_year: Mapped[int] = mapped_column(Integer)
    number_seq: Mapped[int] = mapped_column(Integer)
    # the admin form's one-time key: a double submit returns the first credit note
    request_key: Mapped[str] = mapped_column(String(120), unique=True)
    currency: Mapped[str] = mapped_column(String(3))
    subtotal_cents: Mapped[int] = mapped_column(BigInteger)
    tax_rate: Mapped[Decimal] = mapped_column(Numeric(6, 4))
    tax_cents: Mapped[int] = mapped_column(BigInteger)
    total_cents: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)  # customer-facing, printed
    memo: Mapped[str | None] = mapped_column(Text)  # internal, never shown to the customer
    applied_to_due_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    returned_voucher_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    returned_cash_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    returned_card_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    card_refund: Mapped[bool] = mapped_column(Boolean, default=False)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    lines: Mapped[list["CreditNoteLine"]] = relationship(
        back_populates="credit_note", order_by="CreditNoteLine.position"
    )


class CreditNoteLine(Base):
    """One line: part of an invoice line (by amount, or by hours at the line's unit price), or a
    free line (`invoice_line_id` NULL) whose description carries the reason."""

    __tablename__ = "credit_note_lines"
    __table_args__ = (CheckConstraint("amount_cents > 0", name="positive"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    credit_note_id: Mapped[int] = mapped_column(ForeignKey("credit_notes.id"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    invoice_line_id: Mapped[int | None] = mapped_column(ForeignKey("invoice_lines.id"), index=True)
    description: Mapped[str] = mapped_column(String(300))
    seconds: Mapped[int | None] = mapped_column(BigInteger)
    hourly_price: Mapped[Decimal | None] = mapped_column(Numeric(18, 6))
    amount_cents: Mapped[int] = mapped_column(BigInteger)

    credit_note: Mapped[CreditNote] = relationship(back_populates="lines")


class CreditNoteNumberCounter(Base):
    """Last credit-note number used per year (own series); incremented under a row lock."""

    __tablename__ = "credit_note_number_counters"

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
