"""Invoices (SPEC §7): creation, issue with gapless per-year numbers, payments, void, bank transfer.

Guarantees:
- An issued invoice (state != draft) is immutable: number, lines, totals, buyer details and period
  never change. A `before_flush` guard on every Session refuses such changes (`InvoiceImmutable`);
  only `state`, `paid_cents` and the state timestamps move, and only along allowed transitions.
- Numbers are gapless and sequential per year (`2026-000123`): the year's row in
  `invoice_number_counters` is incremented by an atomic UPDATE … RETURNING in the issuing
  transaction, so concurrent issuers queue on that row lock, and a rolled-back issue rolls its
  number back too.
- Every payment is an append-only `InvoicePayment` row; `paid_cents` is their sum and an invoice is
  `paid` exactly when it is fully paid. Money changes lock the invoice row (`FOR UPDATE`) first.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from flask import current_app, has_app_context
from sqlalchemy import event, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, attributes

from app.billing import (
    notifications,
    recovery,  # noqa: F401  (lifts deletion marks when an invoice leaves open)
)
from app.billing.audit import record_audit
from app.billing.ledger import post_entry
from app.billing.money import format_money, tax_cents
from app.billing.settlement_requests import request_settlement
from app.billing.tax import tax_treatment
from app.models import Invoice, InvoiceLine, InvoiceNumberCounter, InvoicePayment, User
from app.models.base import utcnow
from app.models.credit_note import CreditNote

FROZEN_FIELDS = (
    "customer_id",
    "number",
    "number_year",
    "number_seq",
    "billing_period",
    "period_start",
    "period_end",
    "currency",
    "subtotal_cents",
    "tax_rate",
    "tax_cents",
    "total_cents",
    "buyer_name",
    "buyer_company",
    "buyer_address",
    "buyer_postcode",
    "buyer_city",
    "buyer_country",
    "buyer_vat_id",
    "buyer_email",
    "seller_name",
    "seller_address",
    "seller_country",
    "seller_vat_id",
    "reverse_charge",
    "issued_at",
    "due_at",
)
TRANSITIONS = {
    "draft": {"open", "void"},
    "open": {"paid", "void", "uncollectible"},
    "uncollectible": {"paid", "void"},
    "paid": set(),
    "void": set(),
}


class InvoiceError(Exception):
    """Base of invoice errors; `str(error)` is fit for a person."""


class InvoiceImmutable(InvoiceError):
    def __init__(self, what: str = "This invoice is issued and cannot be changed."):
        super().__init__(what)


class InvoiceNotDraft(InvoiceError):
    def __init__(self):
        super().__init__("Only a draft invoice can be issued.")


class InvoiceNotOpen(InvoiceError):
    def __init__(self, state: str):
        super().__init__(f"This invoice is {state}; only open invoices can be changed.")
        self.state = state


class InvalidPayment(InvoiceError):
    pass


class InvoiceHasCreditNotes(InvoiceError):
    def __init__(self, numbers: list[str]):
        super().__init__(
            f"This invoice has credit note{'s' if len(numbers) > 1 else ''} {', '.join(numbers)} and cannot be voided; "
            "issue a credit note for the rest instead."
        )
        self.numbers = numbers


@dataclass(frozen=True)
class LineSpec:
    description: str
    amount_cents: int
    plan_name: str | None = None
    deployment_id: int | None = None
    seconds: int | None = None
    hourly_price: Decimal | None = None


def _config(key: str, default=None):
    return current_app.config.get(key, default) if has_app_context() else default


def payment_terms() -> timedelta:
    return timedelta(days=int(_config("PAYMENT_TERMS_DAYS", 14)))


def format_number(year: int, seq: int) -> str:
    return f"{year}-{seq:06d}"


# ----------------------------------------------------------------- create ---
def create_invoice(
    session: Session,
    customer_id: int,
    lines: list[LineSpec],
    *,
    billing_period: str | None = None,
    period_start: datetime | None = None,
    period_end: datetime | None = None,
    tax_rate: Decimal | None = None,
) -> Invoice:
    """A draft invoice with its lines and totals (tax on the subtotal, rounded once). Without an
    explicit `tax_rate`, the buyer's tax treatment (app.billing.tax: country rate or reverse charge)
    from their current profile. Flushes, does not commit."""
    for spec in lines:
        if not isinstance(spec.amount_cents, int) or isinstance(spec.amount_cents, bool):
            raise TypeError("line amount_cents must be an int")
    reverse_charge = False
    if tax_rate is None:
        buyer = session.get(User, customer_id)
        treatment = tax_treatment(buyer.country if buyer else None, buyer.vat_id if buyer else None)
        rate, reverse_charge = treatment.rate, treatment.reverse_charge
    else:
        rate = Decimal(tax_rate)
    subtotal = sum(spec.amount_cents for spec in lines)
    tax = tax_cents(subtotal, rate)
    invoice = Invoice(
        customer_id=customer_id,
        state="draft",
        billing_period=billing_period,
        period_start=period_start,
        period_end=period_end,
        currency=_config("CURRENCY", "usd"),
        subtotal_cents=subtotal,
        tax_rate=rate,
        tax_cents=tax,
        total_cents=subtotal + tax,
        paid_cents=0,
        reverse_charge=reverse_charge,
        lines=[
            InvoiceLine(
                position=position,
                description=spec.description,
                plan_name=spec.plan_name,
                deployment_id=spec.deployment_id,
                seconds=spec.seconds,
                hourly_price=spec.hourly_price,
                amount_cents=spec.amount_cents,
            )
            for position, spec in enumerate(lines)
        ],
    )
    session.add(invoice)
    session.flush()
    return invoice


# ------------------------------------------------------------------ issue ---
def seller_details() -> dict:
    """The seller as printed on invoices (configuration), snapshotted on each invoice at issue."""
    return {
        "seller_name": _config("SELLER_NAME"),
        "seller_address": _config("SELLER_ADDRESS"),
        "seller_country": _config("SELLER_COUNTRY"),
        "seller_vat_id": _config("SELLER_VAT_ID"),
    }


def next_invoice_number(session: Session, year: int) -> int:
    """Take the next sequence number of `year`. The counter row stays locked until the caller's
    transaction ends, so concurrent issuers get consecutive numbers and a rollback leaves no gap."""
    return take_next_number(session, InvoiceNumberCounter, year)


def take_next_number(session: Session, counter, year: int) -> int:
    """Gapless numbering shared by every document series (invoices, credit notes): `counter` is a
    model with `year` and `last_seq`; its row of `year` is created if missing, then incremented and
    stays locked until the caller's transaction ends."""
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        ins = (pg_insert if dialect == "postgresql" else sqlite_insert)(counter)
        session.execute(ins.values(year=year, last_seq=0).on_conflict_do_nothing(index_elements=["year"]))
    elif session.get(counter, year) is None:
        session.execute(insert(counter).values(year=year, last_seq=0))
    return session.execute(
        update(counter).where(counter.year == year).values(last_seq=counter.last_seq + 1).returning(counter.last_seq)
    ).scalar_one()


def issue_invoice(session: Session, invoice_id: int, *, now: datetime | None = None) -> Invoice:
    """Issue a draft: gapless number of the current year, buyer (billing profile) and seller
    (configuration) details frozen, due date = issue + PAYMENT_TERMS_DAYS, state open, and
    settlement requested. A zero-total invoice is paid at once. Does NOT commit (caller commits)."""
    now = now or utcnow()
    invoice = session.scalar(select(Invoice).where(Invoice.id == invoice_id).with_for_update())
    if invoice is None:
        raise LookupError(invoice_id)
    if invoice.state != "draft":
        raise InvoiceNotDraft()
    buyer = session.scalar(
        select(User).where(User.id == invoice.customer_id).execution_options(populate_existing=True)
    )
    seq = next_invoice_number(session, now.year)
    invoice.number_year, invoice.number_seq = now.year, seq
    invoice.number = format_number(now.year, seq)
    invoice.buyer_name = buyer.name
    invoice.buyer_company = buyer.company
    invoice.buyer_address = buyer.address
    invoice.buyer_postcode = buyer.postcode
    invoice.buyer_city = buyer.city
    invoice.buyer_country = buyer.country
    invoice.buyer_vat_id = buyer.vat_id
    invoice.buyer_email = buyer.email
    for key, value in seller_details().items():
        setattr(invoice, key, value)
    invoice.issued_at = now
    invoice.due_at = now + payment_terms()
    invoice.state = "open"
    session.flush()
    if invoice.total_cents <= 0:
        invoice.state = "paid"
        invoice.paid_at = now
    else:
        request_settlement(session, invoice.customer_id)
    session.flush()
    notifications.announce_invoice_issued(session, invoice)
    return invoice


# --------------------------------------------------------------- payments ---
def lock_invoice(session: Session, invoice_id: int) -> Invoice:
    invoice = session.scalar(
        select(Invoice).where(Invoice.id == invoice_id).with_for_update().execution_options(populate_existing=True)
    )
    if invoice is None:
        raise LookupError(invoice_id)
    return invoice


def apply_payment(
    session: Session,
    invoice: Invoice,
    *,
    source: str,
    amount_cents: int,
    ledger_entry_id: int | None = None,
    charge_attempt_id: int | None = None,
    payment_intent_id: str | None = None,
    reference: str | None = None,
    now: datetime | None = None,
    flush: bool = True,
) -> InvoicePayment:
    """Record money applied to a locked, open invoice; marks it paid when fully paid. Does not commit.
    `flush=False` leaves the payment and the invoice change to the caller's next flush (a caller
    paying several invoices flushes them together)."""
    if invoice.state not in ("open", "uncollectible"):
        raise InvoiceNotOpen(invoice.state)
    if amount_cents <= 0 or amount_cents > invoice.amount_due_cents:
        raise InvalidPayment(f"A payment must be between 0.01 and the amount due ({format_money(invoice.amount_due_cents)}).")
    payment = InvoicePayment(
        invoice_id=invoice.id,
        customer_id=invoice.customer_id,
        source=source,
        amount_cents=amount_cents,
        ledger_entry_id=ledger_entry_id,
        charge_attempt_id=charge_attempt_id,
        payment_intent_id=payment_intent_id,
        reference=reference,
    )
    session.add(payment)
    invoice.paid_cents += amount_cents
    if invoice.paid_cents == invoice.total_cents:
        invoice.state = "paid"
        invoice.paid_at = now or utcnow()
    if flush:
        session.flush()
    if invoice.state == "paid":
        notifications.announce_payment_receipt(session, invoice)
    return payment


def pay_from_balance(session: Session, invoice: Invoice, account: str, amount_cents: int, *,
                     flush: bool = True) -> InvoicePayment | None:
    """Pay part of a locked invoice from the customer's voucher or cash balance: a negative ledger
    entry plus an InvoicePayment. The idempotency key is derived from the invoice and how much was
    paid before, so re-running the same step cannot pay twice. Does not commit (`flush` as for
    `apply_payment`)."""
    key = f"invoice:{invoice.id}:{account}:after:{invoice.paid_cents}"
    posted = post_entry(
        session,
        customer_id=invoice.customer_id,
        account=account,
        amount_cents=-amount_cents,
        kind="invoice_payment",
        idempotency_key=key,
        reference=f"invoice:{invoice.id}",
        note=f"Invoice {invoice.number}",
    )
    if not posted.created:
        return None
    return apply_payment(
        session, invoice, source=account, amount_cents=amount_cents, ledger_entry_id=posted.entry.id,
        reference=invoice.number, flush=flush,
    )


# ------------------------------------------------------------ admin actions ---
def _snapshot(invoice: Invoice) -> dict:
    return {"state": invoice.state, "paid_cents": invoice.paid_cents, "number": invoice.number}


def void_invoice(session: Session, invoice_id: int, *, actor_id: int | None = None, reason: str | None = None) -> Invoice:
    """Void an open invoice without credit notes (one with credit notes is corrected by credit notes only). Partial payments already applied go back to the customer: voucher
    payments to the voucher balance, everything else to the cash balance. Audited; commits."""
    try:
        customer_id = session.scalar(select(Invoice.customer_id).where(Invoice.id == invoice_id))
        if customer_id is None:
            raise LookupError(invoice_id)
        # same lock order as settlement (user row, then invoice): no deadlock with a running settlement
        session.scalar(select(User.id).where(User.id == customer_id).with_for_update())
        invoice = lock_invoice(session, invoice_id)
        if invoice.state != "open":
            raise InvoiceNotOpen(invoice.state)
        credit_notes = list(session.scalars(
            select(CreditNote.number).where(CreditNote.invoice_id == invoice.id).order_by(CreditNote.id)
        ))
        if credit_notes:
            raise InvoiceHasCreditNotes(credit_notes)
        before = _snapshot(invoice)
        for payment in list(invoice.payments):
            account = "voucher" if payment.source == "voucher" else "cash"
            post_entry(
                session,
                customer_id=invoice.customer_id,
                account=account,
                amount_cents=payment.amount_cents,
                kind="invoice_void_credit",
                idempotency_key=f"invoice:{invoice.id}:void:payment:{payment.id}",
                reference=f"invoice:{invoice.id}",
                note=f"Invoice {invoice.number} voided",
            )
        invoice.state = "void"
        invoice.voided_at = utcnow()
        record_audit(session, actor_id, "invoice.void", "invoice", invoice.id, before,
                     {**_snapshot(invoice), "reason": reason})
        if invoice.payments:
            request_settlement(session, invoice.customer_id)
        session.commit()
    except Exception:
        session.rollback()
        raise
    return invoice


def record_bank_transfer(
    session: Session,
    invoice_id: int,
    *,
    actor_id: int | None = None,
    amount_cents: int | None = None,
    reference: str | None = None,
) -> InvoicePayment:
    """Mark (part of) an open invoice paid by bank transfer; the default amount is all that is due.
    Audited; commits."""
    try:
        invoice = lock_invoice(session, invoice_id)
        if invoice.state not in ("open", "uncollectible"):
            raise InvoiceNotOpen(invoice.state)
        before = _snapshot(invoice)
        amount = invoice.amount_due_cents if amount_cents is None else amount_cents
        payment = apply_payment(session, invoice, source="bank_transfer", amount_cents=amount, reference=reference)
        record_audit(session, actor_id, "invoice.bank_transfer", "invoice", invoice.id, before,
                     {**_snapshot(invoice), "amount_cents": amount, "reference": reference})
        session.commit()
    except Exception:
        session.rollback()
        raise
    return payment


# ------------------------------------------------------------ immutability ---
def _original(obj, name: str):
    history = attributes.get_history(obj, name)
    if history.deleted:
        return history.deleted[0]
    if history.unchanged:
        return history.unchanged[0]
    return getattr(obj, name)


def _changed(obj, name: str) -> bool:
    return attributes.get_history(obj, name).has_changes()


@event.listens_for(Session, "before_flush")
def _guard_issued_invoices(session: Session, _flush_context, _instances) -> None:
    """Refuse changes to issued invoices (number, lines, totals, buyer) and illegal transitions."""
    for obj in session.dirty:
        if isinstance(obj, Invoice) and session.is_modified(obj, include_collections=False):
            was = _original(obj, "state")
            if _changed(obj, "state") and obj.state != was and obj.state not in TRANSITIONS.get(was, set()):
                raise InvoiceImmutable(f"An invoice cannot go from {was} to {obj.state}.")
            if was != "draft":
                changed = [name for name in FROZEN_FIELDS if _changed(obj, name)]
                if changed:
                    raise InvoiceImmutable(f"Issued invoice {obj.number} cannot change: {', '.join(changed)}.")
    for obj in session.deleted:
        if isinstance(obj, Invoice) and _original(obj, "state") != "draft":
            raise InvoiceImmutable("Issued invoices are never deleted.")
    for obj in list(session.new) + list(session.dirty) + list(session.deleted):
        if isinstance(obj, InvoiceLine):
            if obj in session.dirty and not session.is_modified(obj, include_collections=False):
                continue
            invoice = obj.invoice if obj.invoice is not None else session.get(Invoice, obj.invoice_id)
            if invoice is not None and invoice not in session.new and _original(invoice, "state") != "draft":
                raise InvoiceImmutable(f"Lines of issued invoice {invoice.number} cannot change.")
