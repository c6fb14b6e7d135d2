"""Credit notes from usage corrections: where recomputed usage is lower than what was billed.

`recompute_usage` rebuilds a period's running time from the deployment events; when a deployment
was billed for more seconds than its events now give (e.g. a `deleted` event delivered after the
invoice was issued), the excess is suggested as a credit by hours on the invoice lines that billed
it, newest invoice first, less whatever credit notes already took from those lines. Read-only:
the admin issues the credit note (prefilled) from the invoice page.
"""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.billing.credit_notes import CREDITABLE_STATES
from app.billing.money import usage_amount_cents
from app.billing.monthly import recompute_usage
from app.models import Invoice, InvoiceLine
from app.models.credit_note import CreditNote, CreditNoteLine


@dataclass(frozen=True)
class SuggestedLine:
    invoice_line_id: int
    description: str
    billed_seconds: int
    credit_seconds: int
    amount_cents: int

    @property
    def credit_hours(self) -> str:
        """Hours for the form, exact to the second (6 places at most)."""
        hours = (Decimal(self.credit_seconds) / 3600).quantize(Decimal("0.000001"))
        return f"{hours:f}".rstrip("0").rstrip(".")


@dataclass
class UsageCreditSuggestion:
    invoice_id: int
    invoice_number: str
    customer_id: int
    lines: list[SuggestedLine] = field(default_factory=list)

    @property
    def amount_cents(self) -> int:
        """Before tax: the credit note adds tax at the invoice's rate."""
        return sum(line.amount_cents for line in self.lines)


def usage_credit_suggestions(session: Session, period: str, *, now: datetime | None = None) -> list[UsageCreditSuggestion]:
    """Per invoice, the hours billed in `period` that recomputed usage no longer supports and that
    no credit note has credited yet."""
    _, differences = recompute_usage(session, period, now=now)
    lower = {d.deployment_id: d.billed_seconds - d.recomputed_seconds for d in differences
             if d.recomputed_seconds < d.billed_seconds}
    if not lower:
        return []
    charges = session.execute(
        select(InvoiceLine.deployment_id, InvoiceLine, Invoice)
        .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
        .where(Invoice.billing_period == period, InvoiceLine.deployment_id.in_(list(lower)))
        .order_by(Invoice.issued_at.desc(), Invoice.id.desc())
    ).all()
    line_ids = [line.id for _, line, _ in charges]
    credited_seconds = dict(session.execute(
        select(CreditNoteLine.invoice_line_id, func.coalesce(func.sum(CreditNoteLine.seconds), 0))
        .where(CreditNoteLine.invoice_line_id.in_(line_ids))
        .group_by(CreditNoteLine.invoice_line_id)
    ).all())
    credited_cents = dict(session.execute(
        select(CreditNoteLine.invoice_line_id, func.sum(CreditNoteLine.amount_cents))
        .join(CreditNote, CreditNote.id == CreditNoteLine.credit_note_id)
        .where(CreditNoteLine.invoice_line_id.in_(line_ids))
        .group_by(CreditNoteLine.invoice_line_id)
    ).all())
    excess = dict(lower)
    for deployment_id, line, _ in charges:  # hours already credited on those lines count against the excess
        excess[deployment_id] -= int(credited_seconds.get(line.id, 0))
    suggestions: dict[int, UsageCreditSuggestion] = {}
    for deployment_id, line, invoice in charges:
        if excess[deployment_id] <= 0 or invoice.state not in CREDITABLE_STATES or line.hourly_price is None:
            continue
        left_seconds = (line.seconds or 0) - int(credited_seconds.get(line.id, 0))
        seconds = min(excess[deployment_id], left_seconds)
        amount = min(usage_amount_cents(line.hourly_price, seconds),
                     line.amount_cents - int(credited_cents.get(line.id, 0))) if seconds > 0 else 0
        if amount <= 0:
            continue
        excess[deployment_id] -= seconds
        suggestion = suggestions.setdefault(
            invoice.id, UsageCreditSuggestion(invoice.id, invoice.number, invoice.customer_id))
        suggestion.lines.append(SuggestedLine(line.id, line.description, line.seconds or 0, seconds, amount))
    return sorted(suggestions.values(), key=lambda s: s.invoice_number)


def prefill_args(suggestion: UsageCreditSuggestion, period: str) -> dict[str, str]:
    """Query arguments that prefill the invoice page's credit-note form."""
    args = {f"line-{line.invoice_line_id}-hours": line.credit_hours for line in suggestion.lines}
    args["credit_reason"] = f"Usage correction for {period}: recomputed usage is lower than billed."
    return args
