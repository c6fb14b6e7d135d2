"""Card attempts as the customer sees them (issue 12): "Visa ending 0341 declined on 2026-11-23:
insufficient funds", the outcome of "Pay now", and a default card that keeps declining.

Read-only. Nothing here changes a card or the default: the customer decides.
"""

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy import Integer, bindparam, select
from sqlalchemy.orm import Session

from app.billing.card_labels import card_label as label_of_card
from app.billing.money import format_money
from app.models import Card, ChargeAttempt, Invoice, InvoicePayment, User
from app.models.base import utcnow

REFUSED_STATES = ("declined", "requires_action", "failed")
UNRESOLVED_STATES = ("pending", "unknown")


def card_label(card: Card | None) -> str:
    """"Visa ending 4242" (app.billing.card_labels)."""
    if card is None:
        return "a card"
    return label_of_card(card.brand, card.last4)


DECLINE_REASONS = {
    "insufficient_funds": "insufficient funds",
    "generic_decline": "declined by the bank",
    "card_declined": "declined by the bank",
    "do_not_honor": "declined by the bank",
    "expired_card": "the card has expired",
    "incorrect_cvc": "incorrect security code",
    "lost_card": "the card was reported lost",
    "stolen_card": "the card was reported stolen",
    "card_velocity_exceeded": "the card's limit was reached",
    "processing_error": "a processing error at the bank",
    "authentication_required": "your bank asks you to confirm the payment",
    "requires_action": "your bank asks you to confirm the payment",
}


def decline_reason(attempt: ChargeAttempt) -> str:
    """The reason the payment provider gave, in words a customer understands."""
    if attempt.status == "requires_action":
        return DECLINE_REASONS["requires_action"]
    reason = DECLINE_REASONS.get((attempt.error_code or "").lower())
    if reason:
        return reason
    return (attempt.error_message or "declined").rstrip(".")


@dataclass(frozen=True)
class AttemptView:
    """A card attempt as the customer sees it: "Visa ending 0341 declined on 2026-11-23: insufficient funds"."""

    id: int
    invoice_id: int
    card: str
    status: str
    amount_cents: int
    at: datetime
    reason: str | None
    payment_intent_id: str | None

    @property
    def sentence(self) -> str:
        day = self.at.strftime("%Y-%m-%d")
        if self.status == "succeeded":
            return f"{self.card} charged on {day}"
        if self.status in ("pending", "unknown"):
            return f"{self.card}: payment of {day} awaiting the provider's answer"
        return f"{self.card} declined on {day}: {self.reason}"


def _view(a: ChargeAttempt, card: Card | None) -> AttemptView:
    return AttemptView(a.id, a.invoice_id, card_label(card), a.status, a.amount_cents, a.created_at,
                       decline_reason(a) if a.status in REFUSED_STATES else None, a.payment_intent_id)


def attempt_views(session: Session, attempts: list[ChargeAttempt]) -> list[AttemptView]:
    cards = {c.id: c for c in session.scalars(select(Card).where(Card.id.in_({a.card_id for a in attempts})))}
    return [_view(a, cards.get(a.card_id)) for a in attempts]


def invoice_attempts(session: Session, invoice_id: int) -> list[AttemptView]:
    """Every card attempt on an invoice, newest first, with its card (one query)."""
    rows = session.execute(
        select(ChargeAttempt, Card).outerjoin(Card, Card.id == ChargeAttempt.card_id)
        .where(ChargeAttempt.invoice_id == invoice_id)
        .order_by(ChargeAttempt.created_at.desc(), ChargeAttempt.id.desc())
    ).all()
    return [_view(attempt, card) for attempt, card in rows]


SOURCE_LABELS = {"voucher": "voucher balance", "cash": "cash balance", "bank_transfer": "bank transfer",
                 "credit_note": "credit note"}


def payment_source_label(session: Session, payment: InvoicePayment) -> str:
    """"Visa ending 4242" for a card payment, the balance or transfer otherwise."""
    if payment.source == "card" and payment.charge_attempt_id:
        attempt = session.get(ChargeAttempt, payment.charge_attempt_id)
        card = session.get(Card, attempt.card_id) if attempt else None
        return card_label(card)
    return SOURCE_LABELS.get(payment.source, payment.source.replace("_", " "))


def last_attempt_id(session: Session, invoice_id: int) -> int:
    """The newest attempt on the invoice (0 when none): "Pay now" reports only attempts after it."""
    return session.scalar(
        select(ChargeAttempt.id).where(ChargeAttempt.invoice_id == invoice_id).order_by(ChargeAttempt.id.desc()).limit(1)
    ) or 0


@dataclass(frozen=True)
class PayResult:
    """What "Pay now" ended with, for the message shown in place.

    status: paid | declined | unconfirmed | no_funds | closed; `actions` says which ways to pay the page
    offers (cards, balance)."""

    status: str
    message: str
    attempts: list[AttemptView]
    actions: tuple[str, ...] = ()


def pay_result(session: Session, invoice: Invoice, *, after_attempt_id: int, now: datetime | None = None) -> PayResult:
    """The outcome of a settlement the customer asked for: paid, or why not and what to do."""
    from app.billing.cards import usable_cards
    from app.billing.settlement import DECLINE_RETRY_INTERVAL

    now = now or utcnow()
    if invoice.state == "paid":
        return PayResult("paid", f"Invoice {invoice.number} is paid. Thank you!", [])
    if invoice.state != "open":
        return PayResult("closed", f"Invoice {invoice.number} is {invoice.state}; there is nothing to pay.", [])
    due = format_money(invoice.amount_due_cents)
    attempts = invoice_attempts(session, invoice.id)
    new = [a for a in attempts if a.id > after_attempt_id]
    if any(a.status in UNRESOLVED_STATES for a in new):
        return PayResult("unconfirmed", "Our payment provider has not confirmed your card payment yet. We check "
                         "again shortly and email you the outcome; nothing will be charged twice.", new)
    refused = [a for a in new if a.status in REFUSED_STATES]
    if not refused:  # no card was tried now: those that declined recently are not retried yet
        refused = [a for a in attempts if a.status in REFUSED_STATES and a.at >= now - DECLINE_RETRY_INTERVAL]
        if refused and not new:
            retry_at = min(a.at for a in refused) + DECLINE_RETRY_INTERVAL
            declined = "; ".join(a.sentence for a in refused)
            return PayResult(
                "declined",
                f"{declined}. We do not charge a declining card again before {retry_at:%Y-%m-%d %H:%M} UTC. "
                f"{due} is still due: make another card your default, add a card, or top up your balance.",
                refused, ("cards", "balance"))
    if refused:
        declined = "; ".join(a.sentence for a in refused)
        return PayResult("declined", f"{declined}. {due} is still due: make another card your default, add a card, "
                         "or top up your balance.", refused, ("cards", "balance"))
    customer = session.get(User, invoice.customer_id)
    balance = customer.voucher_balance_cents + customer.cash_balance_cents
    if not usable_cards(session, invoice.customer_id, now):
        return PayResult("no_funds", f"{due} is still due and your balance is {format_money(balance)}, with no card "
                         "to charge. Top up your balance or add a card.", [], ("balance", "cards"))
    return PayResult("no_funds", f"{due} is still due. Top up your balance or add another card.", [],
                     ("balance", "cards"))


@dataclass(frozen=True)
class DecliningCard:
    """The default card's latest charges were refused: the Cards page asks for another choice."""

    card_id: int
    label: str
    refusals: int  # consecutive, newest first, since its last success
    last: AttemptView


def declining_default_card(session: Session, customer_id: int, limit: int = 20, *,
                           active_cards: list[Card] | None = None) -> DecliningCard | None:
    """The default card when its most recent charge attempt(s) were refused (counted back to its
    last success). None when the default card's last attempt succeeded or it has none.
    `active_cards`: the customer's cards not removed, when the caller already loaded them."""
    if active_cards is not None:
        default = next((card for card in active_cards if card.is_default), None)
    else:
        default = session.scalar(
            select(Card).where(Card.customer_id == customer_id, Card.removed_at.is_(None), Card.is_default.is_(True))
        )
    if default is None:
        return None
    recent = session.execute(_recent_attempts_statement(), {"card_id": default.id, "limit": limit}).all()
    refusals = []
    for attempt_id, status in recent:
        if status not in REFUSED_STATES:
            break
        refusals.append(attempt_id)
    if not refusals:
        return None
    newest = session.get(ChargeAttempt, refusals[0])
    return DecliningCard(default.id, card_label(default), len(refusals), attempt_views(session, [newest])[0])


@lru_cache(maxsize=1)
def _recent_attempts_statement():
    """A card's latest resolved charge attempts (id and status, newest first), built once; bound:
    card id and how many."""
    return (
        select(ChargeAttempt.id, ChargeAttempt.status)
        .where(ChargeAttempt.card_id == bindparam("card_id", type_=Integer), ChargeAttempt.status.notin_(UNRESOLVED_STATES))
        .order_by(ChargeAttempt.created_at.desc(), ChargeAttempt.id.desc())
        .limit(bindparam("limit", type_=Integer))
    )
