"""Credit notes (SPEC §7): the only way to correct an issued invoice.

Guarantees:
- A credit note belongs to one issued invoice (open, uncollectible or paid; never draft or void).
  Its lines are parts of invoice lines (by amount, or by hours at the line's unit price) or free
  lines with a description. Tax is the invoice's rate on the credit note's subtotal, rounded once;
  the credit note that brings the credited subtotal to the invoice's subtotal takes exactly the
  invoice tax not yet credited, so crediting an invoice in several steps never drifts by a cent.
- Bounds: per invoice line, credited amounts and hours never exceed the line's; over the invoice,
  credited subtotal and total never exceed the invoice's. Checked under the invoice row lock.
- Locks, in settlement's order: the customer's user row, then the invoice row, then the year's
  counter row (`credit_note_number_counters`). Concurrent issuers queue; a refused or rolled-back
  issue takes no number, so numbers (`CN-2026-000001`) stay gapless and sequential per year.
- Issued credit notes are immutable: a `before_flush` guard refuses any change or deletion.
- Money, in the credit note's transaction, every entry with an idempotency key derived from the
  credit note: first what the invoice still owes is lowered (an `InvoicePayment` with source
  `credit_note`; credited in full → paid). The rest returns to what paid the invoice, last paid
  first (card, then cash and bank transfer, then voucher): voucher parts to the voucher balance
  (never cash), cash/bank parts to the cash balance, card parts to the cash balance or — the
  admin's choice — refunded to the card: credited to cash and at once taken out again as a
  `cash_refunds` row per payment intent (pending, its own idempotency key), which is sent to
  Stripe only after the commit (app.billing.refunds) and re-sent with the same key until Stripe
  answers. Credit landing on a balance requests settlement of the customer's other open invoices.
- The customer is mailed the credit note with its PDF (a notification queued in the same
  transaction, sent once after the commit).
- The admin form's `request_key` makes a double submit return the first credit note.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from app.billing.audit import record_audit
from app.billing.invoices import apply_payment, lock_invoice, take_next_number
from app.billing.ledger import post_entry
from app.billing.money import format_money, tax_cents, usage_amount_cents
from app.billing.notifications import queue_notification, register_attachment
from app.billing.refunds import schedule_refund_send
from app.billing.settlement_requests import request_settlement
from app.models import Invoice, User
from app.models.base import utcnow
from app.models.credit_note import CreditNote, CreditNoteLine, CreditNoteNumberCounter
from app.models.stripe_events import CashRefund

CREDITABLE_STATES = ("open", "uncollectible", "paid")
MAX_LINES = 100
MAX_REASON = 2000
MAX_DESCRIPTION = 300


class CreditNoteError(Exception):
    """Base of credit-note errors; `str(error)` is fit to show to the admin."""


class CreditNoteImmutable(CreditNoteError):
    def __init__(self, what: str = "An issued credit note cannot be changed."):
        super().__init__(what)


class InvoiceNotCreditable(CreditNoteError):
    pass


class CreditExceedsInvoice(CreditNoteError):
    pass


class InvalidCreditLine(CreditNoteError):
    def __init__(self, message: str, *, index: int | None = None):
        super().__init__(message)
        self.index = index


@dataclass(frozen=True)
class CreditLineInput:
    """What the admin asked for on one line. Invoice line: exactly one of `amount_cents` or
    `seconds`. Free line (`invoice_line_id` None): `amount_cents` and a `description`."""

    invoice_line_id: int | None = None
    amount_cents: int | None = None
    seconds: int | None = None
    description: str | None = None


@dataclass(frozen=True)
class PlannedLine:
    invoice_line_id: int | None
    description: str
    seconds: int | None
    hourly_price: Decimal | None
    amount_cents: int


@dataclass(frozen=True)
class CardRefundPart:
    payment_intent_id: str
    amount_cents: int


@dataclass(frozen=True)
class CreditNotePlan:
    """A credit note computed but not written (the admin preview shows exactly this)."""

    lines: list[PlannedLine]
    subtotal_cents: int
    tax_rate: Decimal
    tax_cents: int
    total_cents: int
    applied_to_due_cents: int
    returned_voucher_cents: int
    returned_cash_cents: int
    returned_card_cents: int
    card_refund: bool
    card_parts: list[CardRefundPart]
    creditable_before_cents: int

    @property
    def card_to_cash_cents(self) -> int:
        return 0 if self.card_refund else self.returned_card_cents


@dataclass
class Credited:
    """What earlier credit notes of one invoice already took."""

    subtotal_cents: int = 0
    tax_cents: int = 0
    total_cents: int = 0
    voucher_cents: int = 0
    cash_cents: int = 0
    card_cents: int = 0
    line_cents: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    line_seconds: dict[int, int] = field(default_factory=lambda: defaultdict(int))


def format_credit_note_number(year: int, seq: int) -> str:
    return f"CN-{year}-{seq:06d}"


def credited_so_far(session: Session, invoice_id: int) -> Credited:
    credited = Credited()
    totals = session.execute(
        select(
            func.coalesce(func.sum(CreditNote.subtotal_cents), 0),
            func.coalesce(func.sum(CreditNote.tax_cents), 0),
            func.coalesce(func.sum(CreditNote.total_cents), 0),
            func.coalesce(func.sum(CreditNote.returned_voucher_cents), 0),
            func.coalesce(func.sum(CreditNote.returned_cash_cents), 0),
            func.coalesce(func.sum(CreditNote.returned_card_cents), 0),
        ).where(CreditNote.invoice_id == invoice_id)
    ).one()
    (credited.subtotal_cents, credited.tax_cents, credited.total_cents, credited.voucher_cents,
     credited.cash_cents, credited.card_cents) = (int(v) for v in totals)
    rows = session.execute(
        select(CreditNoteLine.invoice_line_id, func.sum(CreditNoteLine.amount_cents),
               func.coalesce(func.sum(CreditNoteLine.seconds), 0))
        .join(CreditNote, CreditNote.id == CreditNoteLine.credit_note_id)
        .where(CreditNote.invoice_id == invoice_id, CreditNoteLine.invoice_line_id.is_not(None))
        .group_by(CreditNoteLine.invoice_line_id)
    )
    for line_id, cents, seconds in rows:
        credited.line_cents[line_id] = int(cents)
        credited.line_seconds[line_id] = int(seconds)
    return credited


def credit_notes_of_invoice(session: Session, invoice_id: int) -> list[CreditNote]:
    return list(
        session.scalars(select(CreditNote).where(CreditNote.invoice_id == invoice_id).order_by(CreditNote.id))
    )


# ------------------------------------------------------------------- plan ---
def _plan_lines(invoice: Invoice, inputs: list[CreditLineInput], credited: Credited) -> list[PlannedLine]:
    if not inputs:
        raise InvalidCreditLine("Credit at least one line: an amount or hours of an invoice line, or a free line.")
    if len(inputs) > MAX_LINES:
        raise InvalidCreditLine(f"A credit note has at most {MAX_LINES} lines.")
    by_id = {line.id: line for line in invoice.lines}
    taken_cents = defaultdict(int, credited.line_cents)
    taken_seconds = defaultdict(int, credited.line_seconds)
    planned = []
    for index, spec in enumerate(inputs):
        if spec.invoice_line_id is None:
            description = (spec.description or "").strip()
            if not description:
                raise InvalidCreditLine("A free line needs a description (what is credited and why).", index=index)
            if len(description) > MAX_DESCRIPTION:
                raise InvalidCreditLine(f"A line description has at most {MAX_DESCRIPTION} characters.", index=index)
            if spec.seconds is not None or not spec.amount_cents or spec.amount_cents <= 0:
                raise InvalidCreditLine("A free line needs an amount greater than zero.", index=index)
            planned.append(PlannedLine(None, description, None, None, spec.amount_cents))
            continue
        line = by_id.get(spec.invoice_line_id)
        if line is None:
            raise InvalidCreditLine("That line is not on this invoice.", index=index)
        left_cents = line.amount_cents - taken_cents[line.id]
        if (spec.amount_cents is None) == (spec.seconds is None):
            raise InvalidCreditLine(f"“{line.description}”: credit either an amount or hours, not both.", index=index)
        if spec.seconds is not None:
            if line.seconds is None or line.hourly_price is None:
                raise InvalidCreditLine(f"“{line.description}” is not billed by the hour; credit an amount.", index=index)
            left_seconds = line.seconds - taken_seconds[line.id]
            if spec.seconds <= 0 or spec.seconds > left_seconds:
                raise InvalidCreditLine(
                    f"“{line.description}”: credit between 0 and {left_seconds / 3600:.2f} hours.", index=index
                )
            amount = usage_amount_cents(line.hourly_price, spec.seconds)
            if amount <= 0:
                raise InvalidCreditLine(f"“{line.description}”: those hours are worth less than one cent.", index=index)
            if amount > left_cents:
                raise InvalidCreditLine(
                    f"“{line.description}”: at most {format_money(left_cents)} of this line is left to credit.",
                    index=index,
                )
            taken_seconds[line.id] += spec.seconds
            planned.append(PlannedLine(line.id, line.description, spec.seconds, line.hourly_price, amount))
        else:
            if spec.amount_cents <= 0 or spec.amount_cents > left_cents:
                raise InvalidCreditLine(
                    f"“{line.description}”: credit between 0.01 and {format_money(left_cents)}.", index=index
                )
            planned.append(PlannedLine(line.id, line.description, None, None, spec.amount_cents))
        taken_cents[line.id] += planned[-1].amount_cents
    return planned


def plan_credit_note(
    session: Session, invoice: Invoice, inputs: list[CreditLineInput], *, card_refund: bool = False
) -> CreditNotePlan:
    """Compute a credit note for `invoice` without writing anything: lines, tax, total, and where
    the money would go. Raises a CreditNoteError the admin can read. The caller locks the invoice
    when the plan is going to be written."""
    if invoice.state not in CREDITABLE_STATES:
        raise InvoiceNotCreditable(f"Invoice {invoice.number or '(draft)'} is {invoice.state}; only issued invoices "
                                   "that are open, uncollectible or paid can be credited.")
    credited = credited_so_far(session, invoice.id)
    creditable = invoice.total_cents - credited.total_cents
    if creditable <= 0:
        raise CreditExceedsInvoice(f"Invoice {invoice.number} is already credited in full.")
    lines = _plan_lines(invoice, inputs, credited)
    subtotal = sum(line.amount_cents for line in lines)
    subtotal_left = invoice.subtotal_cents - credited.subtotal_cents
    if subtotal > subtotal_left:
        raise CreditExceedsInvoice(
            f"At most {format_money(subtotal_left)} (before tax) of invoice {invoice.number} is left to credit."
        )
    tax_left = invoice.tax_cents - credited.tax_cents
    tax = tax_left if subtotal == subtotal_left else min(tax_cents(subtotal, invoice.tax_rate), tax_left)
    total = subtotal + tax
    if total > creditable:
        raise CreditExceedsInvoice(f"At most {format_money(creditable)} of invoice {invoice.number} is left to credit.")

    due = invoice.amount_due_cents if invoice.state in ("open", "uncollectible") else 0
    to_due = min(total, due)
    rest = total - to_due
    paid = _paid_by_source(invoice)
    to_card = min(rest, paid["card"] - credited.card_cents)
    rest -= to_card
    to_cash = min(rest, paid["cash"] - credited.cash_cents)
    rest -= to_cash
    to_voucher = min(rest, paid["voucher"] - credited.voucher_cents)
    rest -= to_voucher
    if rest:
        raise CreditExceedsInvoice(f"Only {format_money(total - rest)} of this credit can be placed on invoice "
                                   f"{invoice.number}'s payments.")
    card_parts = _card_refund_parts(session, invoice, to_card) if card_refund and to_card else []
    return CreditNotePlan(
        lines=lines, subtotal_cents=subtotal, tax_rate=Decimal(invoice.tax_rate), tax_cents=tax, total_cents=total,
        applied_to_due_cents=to_due, returned_voucher_cents=to_voucher, returned_cash_cents=to_cash,
        returned_card_cents=to_card, card_refund=bool(card_refund and to_card), card_parts=card_parts,
        creditable_before_cents=creditable,
    )


def _paid_by_source(invoice: Invoice) -> dict[str, int]:
    paid = {"voucher": 0, "cash": 0, "card": 0}
    for payment in invoice.payments:
        if payment.source == "voucher":
            paid["voucher"] += payment.amount_cents
        elif payment.source in ("cash", "bank_transfer"):
            paid["cash"] += payment.amount_cents
        elif payment.source == "card":
            paid["card"] += payment.amount_cents
    return paid


def _card_refund_parts(session: Session, invoice: Invoice, amount_cents: int) -> list[CardRefundPart]:
    """Spread a card refund over the invoice's card payments, newest first, each capped by what
    earlier credit notes have not yet refunded from that payment intent."""
    by_intent: dict[str, int] = {}
    for payment in sorted(invoice.payments, key=lambda p: p.id, reverse=True):
        if payment.source == "card" and payment.payment_intent_id:
            by_intent[payment.payment_intent_id] = by_intent.get(payment.payment_intent_id, 0) + payment.amount_cents
    refunded = dict(
        session.execute(
            select(CashRefund.payment_intent_id, func.sum(CashRefund.amount_cents))
            .where(CashRefund.credit_note_id.is_not(None), CashRefund.status != "failed",
                   CashRefund.payment_intent_id.in_(list(by_intent)))
            .group_by(CashRefund.payment_intent_id)
        ).all()
    )
    parts, remaining = [], amount_cents
    for intent, paid in by_intent.items():
        part = min(remaining, paid - int(refunded.get(intent, 0)))
        if part > 0:
            parts.append(CardRefundPart(intent, part))
            remaining -= part
        if remaining == 0:
            break
    if remaining:
        raise CreditExceedsInvoice("The card payments of this invoice cannot take this refund; credit it to the "
                                   "cash balance instead.")
    return parts


# ------------------------------------------------------------------ issue ---
def _next_number(session: Session, year: int) -> int:
    """Next sequence number of `year` in the credit-note series (the invoices' gapless counter rule)."""
    return take_next_number(session, CreditNoteNumberCounter, year)


def issue_credit_note(
    session: Session,
    invoice_id: int,
    inputs: list[CreditLineInput],
    *,
    reason: str,
    request_key: str,
    memo: str | None = None,
    card_refund: bool = False,
    actor_id: int | None = None,
    now: datetime | None = None,
) -> CreditNote:
    """Issue a credit note on an invoice and move the money (see the module docstring). Audited;
    commits. Card refunds are sent to Stripe after the commit."""
    reason = (reason or "").strip()
    memo = (memo or "").strip() or None
    if not reason:
        raise CreditNoteError("Give the reason the customer will read on the credit note.")
    if len(reason) > MAX_REASON or (memo and len(memo) > MAX_REASON):
        raise CreditNoteError(f"Reason and memo have at most {MAX_REASON} characters.")
    if not request_key or len(request_key) > 120:
        raise CreditNoteError("This form has expired; reload the page and try again.")
    now = now or utcnow()
    try:
        customer_id = session.scalar(select(Invoice.customer_id).where(Invoice.id == invoice_id))
        if customer_id is None:
            raise LookupError(invoice_id)
        # settlement's lock order (user row, then invoice): no deadlock with a running settlement
        session.scalar(select(User.id).where(User.id == customer_id).with_for_update())
        existing = session.scalar(select(CreditNote).where(CreditNote.request_key == request_key))
        if existing is not None:
            if existing.invoice_id != invoice_id:
                raise CreditNoteError("This form has expired; reload the page and try again.")
            session.commit()
            return existing
        invoice = lock_invoice(session, invoice_id)
        session.refresh(invoice, ["payments", "lines"])
        before = {"state": invoice.state, "paid_cents": invoice.paid_cents, "due_cents": invoice.amount_due_cents}
        plan = plan_credit_note(session, invoice, inputs, card_refund=card_refund)
        credit_note = _write_credit_note(session, invoice, plan, reason=reason, memo=memo, request_key=request_key,
                                         actor_id=actor_id, now=now)
        _move_money(session, invoice, credit_note, plan, now)
        record_audit(
            session, actor_id, "credit_note.issue", "credit_note", credit_note.id, before,
            {"number": credit_note.number, "invoice": invoice.number, "total_cents": plan.total_cents,
             "tax_cents": plan.tax_cents, "applied_to_due_cents": plan.applied_to_due_cents,
             "returned_voucher_cents": plan.returned_voucher_cents, "returned_cash_cents": plan.returned_cash_cents,
             "returned_card_cents": plan.returned_card_cents, "card_refund": plan.card_refund,
             "reason": reason, "memo": memo, "invoice_state": invoice.state, "invoice_due_cents": invoice.amount_due_cents},
        )
        announce_credit_note(session, credit_note, invoice)
        session.commit()
    except Exception:
        session.rollback()
        raise
    return credit_note


def announce_credit_note(session: Session, credit_note: CreditNote, invoice: Invoice) -> bool:
    """Mail the customer the credit note (PDF attached), once, after the commit. Everything the mail
    says is in the context: an issued credit note never changes."""
    return queue_notification(
        session, user_id=invoice.customer_id, kind="credit_note_issued", key=f"credit-note-issued:{credit_note.id}",
        subject=f"Credit note {credit_note.number} for invoice {invoice.number}", template="credit_note_issued",
        context={
            "credit_note_id": credit_note.id, "invoice_id": invoice.id, "number": credit_note.number,
            "invoice_number": invoice.number, "reason": credit_note.reason, "total_cents": credit_note.total_cents,
            "tax_cents": credit_note.tax_cents, "applied_to_due_cents": credit_note.applied_to_due_cents,
            "returned_voucher_cents": credit_note.returned_voucher_cents,
            "returned_cash_cents": credit_note.returned_cash_cents,
            "returned_card_cents": credit_note.returned_card_cents, "card_refund": credit_note.card_refund,
        },
        attachment=("credit_note_pdf", credit_note.id),
    )


def _credit_note_pdf(session: Session, customer_id: int, credit_note_id) -> tuple[str, str, bytes] | None:
    """The notification attachment: the customer's own credit note as PDF, rendered at send time."""
    from app.pdf import render_credit_note_pdf

    credit_note = session.get(CreditNote, int(credit_note_id))
    if credit_note is None or credit_note.customer_id != customer_id:
        return None
    pdf = render_credit_note_pdf(credit_note, session.get(Invoice, credit_note.invoice_id))
    return f"credit-note-{credit_note.number}.pdf", "application/pdf", pdf


register_attachment("credit_note_pdf", _credit_note_pdf)


def _write_credit_note(session, invoice, plan, *, reason, memo, request_key, actor_id, now) -> CreditNote:
    seq = _next_number(session, now.year)
    credit_note = CreditNote(
        invoice_id=invoice.id, customer_id=invoice.customer_id,
        number=format_credit_note_number(now.year, seq), number_year=now.year, number_seq=seq,
        request_key=request_key, currency=invoice.currency, subtotal_cents=plan.subtotal_cents,
        tax_rate=plan.tax_rate, tax_cents=plan.tax_cents, total_cents=plan.total_cents, reason=reason, memo=memo,
        applied_to_due_cents=plan.applied_to_due_cents, returned_voucher_cents=plan.returned_voucher_cents,
        returned_cash_cents=plan.returned_cash_cents, returned_card_cents=plan.returned_card_cents,
        card_refund=plan.card_refund, actor_id=actor_id, issued_at=now,
        lines=[
            CreditNoteLine(position=position, invoice_line_id=line.invoice_line_id, description=line.description,
                           seconds=line.seconds, hourly_price=line.hourly_price, amount_cents=line.amount_cents)
            for position, line in enumerate(plan.lines)
        ],
    )
    session.add(credit_note)
    session.flush()
    return credit_note


def _move_money(session: Session, invoice: Invoice, credit_note: CreditNote, plan: CreditNotePlan, now) -> None:
    key = f"credit-note:{credit_note.id}"
    note = f"Credit note {credit_note.number} for invoice {invoice.number}"
    if plan.applied_to_due_cents:
        apply_payment(session, invoice, source="credit_note", amount_cents=plan.applied_to_due_cents,
                      reference=credit_note.number, now=now)
    for account, amount, suffix in (
        ("voucher", plan.returned_voucher_cents, "voucher"),
        ("cash", plan.returned_cash_cents, "cash"),
        ("cash", plan.returned_card_cents, "card"),
    ):
        if amount:
            post_entry(session, customer_id=invoice.customer_id, account=account, amount_cents=amount,
                       kind="credit_note", idempotency_key=f"{key}:{suffix}", reference=credit_note.number, note=note)
    for part in plan.card_parts:
        refund = CashRefund(
            customer_id=invoice.customer_id, topup_id=None, credit_note_id=credit_note.id,
            payment_intent_id=part.payment_intent_id, amount_cents=part.amount_cents, request_key=key,
            idempotency_key=f"{key}:refund:{part.payment_intent_id}", reason=f"{note}: {credit_note.reason}"[:2000],
            actor_id=credit_note.actor_id, status="pending",
        )
        session.add(refund)
        post_entry(session, customer_id=invoice.customer_id, account="cash", amount_cents=-part.amount_cents,
                   kind="refund", idempotency_key=refund.idempotency_key, reference=part.payment_intent_id,
                   note=f"credit note {credit_note.number}")
        session.flush()
        record_audit(session, credit_note.actor_id, "credit_note.refund_to_card", "cash_refund", refund.id, None,
                     {"credit_note": credit_note.number, "payment_intent_id": part.payment_intent_id,
                      "amount_cents": part.amount_cents})
    if plan.card_parts:
        schedule_refund_send(session, key)
    if plan.returned_voucher_cents or plan.returned_cash_cents or plan.card_to_cash_cents:
        request_settlement(session, invoice.customer_id)


# ------------------------------------------------------------ immutability ---
@event.listens_for(Session, "before_flush")
def _guard_issued_credit_notes(session: Session, _flush_context, _instances) -> None:
    """Issued credit notes and their lines are written once and never changed or deleted."""
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, CreditNote | CreditNoteLine):
            if obj in session.deleted or session.is_modified(obj, include_collections=False):
                raise CreditNoteImmutable()
    for obj in session.new:
        if isinstance(obj, CreditNoteLine):
            parent = obj.credit_note
            if parent is None and obj.credit_note_id is not None:
                parent = session.get(CreditNote, obj.credit_note_id)
            if parent is not None and parent not in session.new:
                raise CreditNoteImmutable("Lines of an issued credit note cannot change.")

