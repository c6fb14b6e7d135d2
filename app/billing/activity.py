"""The customer's activity (SPEC §15): every movement of their money and every card attempt, newest
first: one query for a page's rows and the pager's count (built once, with bound parameters, so
neither SQLAlchemy nor PostgreSQL — psycopg prepares a statement used often — plans it per request).

Sources, each read through its (customer_id, created_at) index:
- ledger entries: top-ups, voucher redemptions, invoice payments from the cash and voucher balances,
  voided-invoice credits, card overpayments credited to cash, refunds and their reversals, admin
  adjustments with their reason (the reason is shown to the customer);
- card charge attempts, whatever their outcome: a succeeded one is the card paying an invoice (the
  charged amount; anything no longer due shows separately as a credit to cash), the others show what
  was tried and why it did not go through;
- top-ups charged to a saved card that did not go through (a succeeded one is its ledger entry, which
  names the card);
- invoice payments that touch neither balance nor card: bank transfers, credit notes (a credit note's
  returns to the balances and its refunds to the card are ledger entries like any other).

Each source is ordered and cut to `offset + limit` rows before the union (top-N on its index), so a
page costs the same for a customer with ten entries and one with ten thousand; invoice numbers and
card labels are joined after the cut, for the page's rows only.
"""

import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from sqlalchemy import Integer, String, and_, bindparam, case, cast, func, literal, null, select, union_all
from sqlalchemy.orm import Session

from app.billing.card_labels import card_label
from app.billing.usage import period_bounds, period_of
from app.models import Card, ChargeAttempt, Invoice, InvoicePayment, LedgerEntry, User
from app.models.base import UTCDateTime, utcnow
from app.models.stripe_events import CardTopup

PAGE_SIZE = 50
EXPORT_LIMIT = 100_000
_MONTH = re.compile(r"(20[0-9]{2})-(0[1-9]|1[0-2])")

ACCOUNT_LABELS = {"cash": "Cash balance", "voucher": "Voucher balance", "bank_transfer": "Bank transfer",
                  "credit_note": "Credit note"}
ATTEMPT_STATUS = {"succeeded": "done", "declined": "declined", "failed": "failed",
                  "requires_action": "needs authentication", "pending": "processing", "unknown": "processing"}


class InvalidMonth(ValueError):
    def __init__(self):
        super().__init__("Choose a month like 2026-11.")


@dataclass(frozen=True)
class ActivityRow:
    occurred_at: datetime
    kind: str  # ledger kind (topup, voucher, …), "card_payment", "card_attempt", "bank_transfer", "credit_note"
    description: str
    account: str  # "Cash balance", "Voucher balance", "Visa ending 4242", "Bank transfer", …
    amount_cents: int  # signed: + into the customer's balances, − paid out of them or their card; 0 if nothing moved
    attempted_cents: int  # for card attempts: the amount tried (also when it did not go through)
    status: str  # "done", or a card attempt's state: declined, failed, processing, needs authentication
    reference: str | None  # secondary text: the Stripe reference, a bank reference
    invoice_id: int | None
    invoice_number: str | None


@dataclass(frozen=True)
class ActivityPage:
    rows: list[ActivityRow]
    total: int
    page: int
    pages: int
    page_size: int
    month: str | None


def parse_month(text: str | None) -> str | None:
    """'' or None → all months; '2026-11' → '2026-11'; anything else → InvalidMonth."""
    text = (text or "").strip()
    if not text:
        return None
    if not _MONTH.fullmatch(text):
        raise InvalidMonth()
    return text


def months_since(customer: User, now: datetime | None = None) -> list[str]:
    """The months the customer can pick, newest first (from sign-up to now; no query)."""
    now = now or utcnow()
    start = customer.created_at or now
    year, month = now.year, now.month
    out = []
    while (year, month) >= (start.year, start.month) and len(out) < 240:
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return out or [period_of(now)]


def _sources(by_month: bool):
    """The four sources, filtered on the bound `customer_id` (and `month_start`/`month_end` when
    `by_month`)."""
    customer_id = bindparam("customer_id", type_=Integer)
    start = bindparam("month_start", type_=UTCDateTime) if by_month else None
    end = bindparam("month_end", type_=UTCDateTime) if by_month else None

    def within(column):
        if start is None:
            return literal(True)
        return and_(column >= start, column < end)

    invoice_ref = case(
        (LedgerEntry.reference.like("invoice:%"), cast(func.substr(LedgerEntry.reference, 9), Integer)),
        else_=null(),
    )
    ledger = select(
        LedgerEntry.created_at.label("occurred_at"), literal(1).label("branch"), LedgerEntry.id.label("row_id"),
        LedgerEntry.kind.label("kind"), LedgerEntry.account.label("account"),
        LedgerEntry.amount_cents.label("amount_cents"), LedgerEntry.amount_cents.label("attempted_cents"),
        literal("done").label("status"), LedgerEntry.reference.label("reference"), LedgerEntry.note.label("note"),
        invoice_ref.label("invoice_id"), cast(null(), Integer).label("card_id"),
    ).where(LedgerEntry.customer_id == customer_id, within(LedgerEntry.created_at))
    attempts = select(
        ChargeAttempt.created_at.label("occurred_at"), literal(2).label("branch"), ChargeAttempt.id.label("row_id"),
        case((ChargeAttempt.status == "succeeded", literal("card_payment")), else_=literal("card_attempt")).label("kind"),
        literal("card").label("account"),
        case((ChargeAttempt.status == "succeeded", -ChargeAttempt.amount_cents), else_=0).label("amount_cents"),
        ChargeAttempt.amount_cents.label("attempted_cents"), ChargeAttempt.status.label("status"),
        ChargeAttempt.payment_intent_id.label("reference"),
        func.coalesce(ChargeAttempt.error_message, ChargeAttempt.error_code).label("note"),
        ChargeAttempt.invoice_id.label("invoice_id"), ChargeAttempt.card_id.label("card_id"),
    ).where(ChargeAttempt.customer_id == customer_id, within(ChargeAttempt.created_at))
    other_payments = select(
        InvoicePayment.created_at.label("occurred_at"), literal(3).label("branch"), InvoicePayment.id.label("row_id"),
        InvoicePayment.source.label("kind"), InvoicePayment.source.label("account"),
        (-InvoicePayment.amount_cents).label("amount_cents"), InvoicePayment.amount_cents.label("attempted_cents"),
        literal("done").label("status"),
        func.coalesce(InvoicePayment.payment_intent_id, InvoicePayment.reference).label("reference"),
        cast(null(), String).label("note"), InvoicePayment.invoice_id.label("invoice_id"),
        cast(null(), Integer).label("card_id"),
    ).where(
        InvoicePayment.customer_id == customer_id,
        InvoicePayment.source.notin_(("cash", "voucher", "card")),
        within(InvoicePayment.created_at),
    )
    topup_attempts = select(
        CardTopup.created_at.label("occurred_at"), literal(4).label("branch"), CardTopup.id.label("row_id"),
        literal("card_topup_attempt").label("kind"), literal("card").label("account"),
        literal(0).label("amount_cents"), CardTopup.amount_cents.label("attempted_cents"),
        CardTopup.status.label("status"), CardTopup.payment_intent_id.label("reference"),
        func.coalesce(CardTopup.error_message, CardTopup.error_code).label("note"),
        cast(null(), Integer).label("invoice_id"), CardTopup.card_id.label("card_id"),
    ).where(CardTopup.customer_id == customer_id, CardTopup.status != "succeeded", within(CardTopup.created_at))
    return [
        (ledger, LedgerEntry.created_at, LedgerEntry.id),
        (attempts, ChargeAttempt.created_at, ChargeAttempt.id),
        (other_payments, InvoicePayment.created_at, InvoicePayment.id),
        (topup_attempts, CardTopup.created_at, CardTopup.id),
    ]


def _params(customer_id: int, month: str | None, **extra) -> dict:
    params = {"customer_id": customer_id, **extra}
    if month:
        params["month_start"], params["month_end"] = period_bounds(month)
    return params


@cache
def _page_statement(by_month: bool, with_total: bool):
    """Rows `offset`..`offset + limit` (bound), with the total of every source when `with_total`."""
    offset, limit = bindparam("offset", type_=Integer), bindparam("limit", type_=Integer)
    customer_id = bindparam("customer_id", type_=Integer)
    parts = [
        select(part.order_by(created.desc(), row_id.desc()).limit(offset + limit).subquery())
        for part, created, row_id in _sources(by_month)
    ]
    merged = union_all(*parts).subquery("activity")
    page = (
        select(merged).order_by(merged.c.occurred_at.desc(), merged.c.branch, merged.c.row_id.desc())
        .offset(offset).limit(limit).subquery("page")
    )
    # a top-up charged to a saved card names that card (looked up for this page's rows only)
    topup_card = (
        select(CardTopup.card_id)
        .where(page.c.kind == "topup", CardTopup.payment_intent_id == page.c.reference,
               CardTopup.customer_id == customer_id)
        .limit(1).scalar_subquery()
    )
    columns = [page, Invoice.number.label("invoice_number"), Card.brand, Card.last4]
    if with_total:
        columns.append(_total_expression(by_month).label("total"))
    return (
        select(*columns)
        .outerjoin(Invoice, and_(Invoice.id == page.c.invoice_id, Invoice.customer_id == customer_id))
        .outerjoin(Card, and_(Card.id == func.coalesce(page.c.card_id, topup_card), Card.customer_id == customer_id))
        .order_by(page.c.occurred_at.desc(), page.c.branch, page.c.row_id.desc())
    )


def _total_expression(by_month: bool):
    """The number of rows of every source, as one expression (uncorrelated: computed once)."""
    counts = [select(func.count()).select_from(part.subquery()).scalar_subquery() for part, _, _ in _sources(by_month)]
    total = counts[0]
    for count in counts[1:]:
        total = total + count
    return total


@cache
def _count_statement(by_month: bool):
    return select(_total_expression(by_month))


def _rows(session: Session, customer_id: int, month: str | None, offset: int, limit: int,
          with_total: bool = False) -> tuple[list[ActivityRow], int | None]:
    """The page's rows; with `with_total`, the number of rows of every page too, in the same
    statement (None when the page is empty: the caller counts separately)."""
    result = session.execute(_page_statement(bool(month), with_total),
                             _params(customer_id, month, offset=offset, limit=limit)).all()
    total = int(result[0].total) if with_total and result else None
    return [_row(r) for r in result], total


def _count(session: Session, customer_id: int, month: str | None) -> int:
    return int(session.scalar(_count_statement(bool(month)), _params(customer_id, month)) or 0)


def activity_page(session: Session, customer_id: int, *, month: str | None = None, page: int = 1,
                  page_size: int = PAGE_SIZE) -> ActivityPage:
    """One page of the customer's activity, newest first, optionally limited to one month (UTC).
    One statement for a page that has rows; a page past the end is clamped to the last one."""
    page = max(page, 1)
    rows, total = _rows(session, customer_id, month, (page - 1) * page_size, page_size, with_total=True)
    if total is None:  # an empty page: nothing at all, or a page number past the end
        total = _count(session, customer_id, month) if page > 1 else 0
        last = max((total + page_size - 1) // page_size, 1)
        if total and page > last:
            page = last
            rows, _ = _rows(session, customer_id, month, (page - 1) * page_size, page_size)
    pages = max((total + page_size - 1) // page_size, 1)
    return ActivityPage(rows, total, min(page, pages), pages, page_size, month)


def activity_rows(session: Session, customer_id: int, *, month: str | None = None,
                  limit: int = EXPORT_LIMIT) -> list[ActivityRow]:
    """Every row for the export (newest first), up to `limit`."""
    return _rows(session, customer_id, month, 0, limit)[0]


# ------------------------------------------------------------------ wording ---
def _invoice_name(number: str | None, invoice_id: int | None) -> str:
    return f"invoice {number}" if number else (f"invoice #{invoice_id}" if invoice_id else "an invoice")


def _row(r) -> ActivityRow:
    invoice = _invoice_name(r.invoice_number, r.invoice_id)
    account = ACCOUNT_LABELS.get(r.account, r.account.replace("_", " ").capitalize())
    status = r.status
    note = (r.note or "").strip()
    if r.branch == 2:
        account = card_label(r.brand, r.last4)
        status = ATTEMPT_STATUS.get(r.status, r.status)
        if r.status == "succeeded":
            description = f"Paid {invoice} by card"
        elif r.status in ("pending", "unknown"):
            description = f"Card payment for {invoice} being confirmed with the card issuer"
        elif r.status == "requires_action":
            description = f"Card payment for {invoice} needs authentication"
        else:
            description = f"Card {status} for {invoice}" + (f": {note}" if note else "")
    elif r.branch == 4:
        account = card_label(r.brand, r.last4)
        status = ATTEMPT_STATUS.get(r.status, r.status)
        if r.status in ("pending", "unknown"):
            description = "Card top-up being confirmed with the card issuer"
        elif r.status == "requires_action":
            description = "Card top-up needed authentication (continued through Checkout)"
        else:
            description = f"Card top-up {status}" + (f": {note}" if note else "")
    elif r.branch == 3:
        if r.kind == "credit_note":
            description = f"Credit note {r.reference} lowered what {invoice} owes" if r.reference else \
                f"A credit note lowered what {invoice} owes"
        else:
            what = {"bank_transfer": "bank transfer"}.get(r.kind, r.kind.replace("_", " "))
            description = f"Paid {invoice} by {what}"
    else:
        description = _ledger_description(r.kind, r.account, r.amount_cents, note, invoice)
        if r.kind == "topup" and r.last4:
            description = f"Top-up from {card_label(r.brand, r.last4)}"
    return ActivityRow(
        occurred_at=r.occurred_at, kind=r.kind, description=description, account=account,
        amount_cents=int(r.amount_cents), attempted_cents=int(r.attempted_cents), status=status,
        reference=r.reference if r.reference and not r.reference.startswith(("invoice:", "voucher:", "admin:")) else None,
        invoice_id=r.invoice_id if r.invoice_number else None, invoice_number=r.invoice_number,
    )


def _ledger_description(kind: str, account: str, amount_cents: int, note: str, invoice: str) -> str:
    balance = "voucher balance" if account == "voucher" else "cash balance"
    if kind == "topup":
        return "Top-up"
    if kind == "voucher":
        return f"Voucher redeemed ({note})" if note else "Voucher redeemed"
    if kind == "invoice_payment":
        return f"Paid {invoice} from your {balance}"
    if kind == "invoice_void_credit":
        return f"Payment on {invoice} returned to your {balance} (invoice voided)"
    if kind == "credit_note":
        return f"{note or 'Credit note'}: credited to your {balance}"
    if kind == "card_overpayment":
        return "Card payment no longer due, credited to your cash balance"
    if kind == "admin_adjustment":
        verb = "Credit" if amount_cents > 0 else "Debit"
        return f"{verb} by Paydesk: {note}" if note else f"{verb} by Paydesk"
    if kind == "refund":
        return f"Refund to your card: {note}" if note else "Refund to your card"
    if kind == "refund_reversal":
        return "Refund failed, amount returned to your cash balance"
    label = kind.replace("_", " ").capitalize()
    return f"{label}: {note}" if note else label
