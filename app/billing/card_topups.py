"""Top-ups charged to a saved card (off-session PaymentIntent), with Checkout as the fallback.

A charge is three steps, like settlement's card attempts: record the attempt (`pending`, with its
idempotency key) and commit; call Stripe with that key; record the outcome. A timeout or 5xx is
`unknown`, never `failed`: `redrive_unresolved_card_topups` (a periodic job) sends the SAME request
with the SAME key later, so Stripe replays the original answer instead of charging again.

The balance is credited by `topups.credit_topup` (ledger key `topup:<payment_intent_id>`), the same
exactly-once rule as Checkout top-ups: whichever comes first of this request, the
`payment_intent.succeeded` webhook (the intent carries `paydesk_purpose=topup`) or the
reconciliation of missed events credits it; the others find the entry and do nothing.

When the bank asks for 3-D Secure the off-session charge cannot proceed (`requires_action`): the
caller sends the customer to Checkout for the same amount, where they can authenticate.
"""

import logging
import re
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.billing import card_labels, topups
from app.billing.cards import usable_cards
from app.billing.stripe_customers import ensure_stripe_customer
from app.models import Card
from app.models.base import utcnow
from app.models.stripe_events import CardTopup
from app.payments import gateway

log = logging.getLogger(__name__)
UNRESOLVED = ("pending", "unknown")
REQUEST_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
REDRIVE_MIN_AGE = timedelta(seconds=30)

DECLINE_REASONS = {
    "insufficient_funds": "insufficient funds",
    "expired_card": "the card has expired",
    "incorrect_cvc": "the security code is wrong",
    "lost_card": "the card was reported lost",
    "stolen_card": "the card was reported stolen",
    "do_not_honor": "the bank did not approve it",
    "generic_decline": "the bank did not approve it",
    "card_declined": "the bank did not approve it",
    "processing_error": "the bank had a processing error",
}


class CardTopupDeclined(topups.TopupError):
    """The card refused the charge; nothing was credited. `str()` names the card and the reason."""


class CardTopupInProgress(topups.TopupError):
    """Stripe's answer is not known yet (timeout) or the same request is already being handled.
    Nothing will be charged twice; the balance is credited once Stripe confirms."""


class CardTopupNeedsAuthentication(topups.TopupError):
    """The bank wants 3-D Secure: the customer must pay through Checkout (`checkout_url`)."""

    def __init__(self, checkout_url: str):
        super().__init__("Your bank asks you to confirm this payment; continue on the secure payment page.")
        self.checkout_url = checkout_url


class InvalidTopupRequest(topups.TopupError):
    pass


@dataclass(frozen=True)
class CardTopupResult:
    topup_id: int
    amount_cents: int
    card_label: str
    payment_intent_id: str


def card_label(card: Card) -> str:
    return card_labels.card_label(card.brand, card.last4)


def decline_reason(code: str | None) -> str:
    return DECLINE_REASONS.get(code or "", "the bank did not approve it")


def idempotency_key(customer_id: int, request_token: str) -> str:
    return f"paydesk-topup-{customer_id}-{request_token}"


def top_up_with_saved_card(
    session: Session,
    customer_id: int,
    card_id: int,
    amount_cents: int,
    request_token: str,
    *,
    success_url: str,
    cancel_url: str,
) -> CardTopupResult:
    """Charge `amount_cents` to one of the customer's usable cards and credit the cash balance once.

    `request_token` is the one-time token of the form that asked for it: submitting it twice repeats
    the same Stripe request (same idempotency key), never a second charge. Commits.
    Raises TopupAmountOutOfRange, InvalidTopupRequest, CardTopupDeclined, CardTopupInProgress,
    CardTopupNeedsAuthentication (with a Checkout URL for the same amount) or a gateway error
    from creating that Checkout session."""
    topups.check_topup_amount(amount_cents)
    if not REQUEST_TOKEN.match(request_token or ""):
        raise InvalidTopupRequest("This form has expired. Please reload the page and try again.")
    card = next((c for c in usable_cards(session, customer_id) if c.id == card_id), None)
    if card is None:
        session.rollback()
        raise InvalidTopupRequest("Choose one of your saved cards, or pay with a new card.")
    label = card_label(card)
    stripe_customer_id = ensure_stripe_customer(session, customer_id)

    attempt_id, fresh = _record_pending(session, customer_id, card.id, amount_cents, request_token)
    attempt = session.get(CardTopup, attempt_id)
    if not fresh and (attempt.card_id != card.id or attempt.amount_cents != amount_cents):
        session.rollback()
        raise InvalidTopupRequest("This form was already used. Please reload the page and try again.")
    if not fresh and attempt.status == "pending":
        session.rollback()
        raise CardTopupInProgress("This top-up is already being processed; reload the page in a moment.")
    replayed = None if fresh or attempt.status in UNRESOLVED else attempt.status
    session.rollback()

    # a form submitted again gets the recorded outcome; an unknown one is asked again, same key
    status = replayed or _send(session, attempt_id, stripe_customer_id, card.stripe_payment_method_id)
    attempt = session.get(CardTopup, attempt_id, populate_existing=True)
    if status == "succeeded":
        result = CardTopupResult(attempt.id, attempt.amount_cents, label, attempt.payment_intent_id)
        session.rollback()
        return result
    if status == "requires_action":
        session.rollback()
        url = topups.start_topup(session, customer_id, amount_cents, success_url=success_url, cancel_url=cancel_url)
        raise CardTopupNeedsAuthentication(url)
    if status in UNRESOLVED:
        session.rollback()
        raise CardTopupInProgress(
            "Our payment provider did not confirm the payment yet. You will not be charged twice; "
            "your balance is updated as soon as the payment is confirmed."
        )
    code, message = attempt.error_code, attempt.error_message
    session.rollback()
    if status == "declined":
        raise CardTopupDeclined(
            f"{label} was declined: {decline_reason(code)}. Nothing was charged. "
            "Try another card, or pay with a new card."
        )
    raise CardTopupDeclined(f"{label} could not be charged: {message} Try another card, or pay with a new card.")


def _record_pending(
    session: Session, customer_id: int, card_id: int, amount_cents: int, request_token: str
) -> tuple[int, bool]:
    """Step 1: the attempt row, committed before Stripe hears of it. Returns (id, created)."""
    key = idempotency_key(customer_id, request_token)
    attempt = CardTopup(
        customer_id=customer_id,
        card_id=card_id,
        amount_cents=amount_cents,
        currency=current_app.config["CURRENCY"],
        idempotency_key=key,
        status="pending",
    )
    session.add(attempt)
    try:
        session.commit()
        return attempt.id, True
    except IntegrityError:
        session.rollback()
    existing = session.scalar(select(CardTopup).where(CardTopup.idempotency_key == key))
    if existing is None or existing.customer_id != customer_id:
        session.rollback()
        raise InvalidTopupRequest("This form has expired. Please reload the page and try again.")
    return existing.id, False


def _send(session: Session, attempt_id: int, stripe_customer_id: str, payment_method_id: str) -> str:
    """Steps 2 and 3: call Stripe with the attempt's key (no transaction open meanwhile), then record
    the outcome; on success credit the balance in the same transaction."""
    attempt = session.get(CardTopup, attempt_id, populate_existing=True)
    params = dict(
        stripe_customer_id=stripe_customer_id,
        payment_method_id=payment_method_id,
        amount_cents=attempt.amount_cents,
        currency=attempt.currency,
        idempotency_key=attempt.idempotency_key,
        metadata={
            "paydesk_purpose": topups.PURPOSE,
            "paydesk_customer_id": str(attempt.customer_id),
            "paydesk_card_topup_id": str(attempt.id),
        },
    )
    session.rollback()
    try:
        charge = gateway.charge_off_session(**params)
    except gateway.PaymentOutcomeUnknown as exc:
        return _record_outcome(session, attempt_id, "unknown", exc)
    except gateway.AuthenticationRequired as exc:
        return _record_outcome(session, attempt_id, "requires_action", exc)
    except gateway.CardDeclined as exc:
        return _record_outcome(session, attempt_id, "declined", exc)
    except gateway.PaymentRequestInvalid as exc:
        return _record_outcome(session, attempt_id, "failed", exc)
    except Exception as exc:  # anything unexpected: the charge may have happened
        log.exception("card top-up %s: unexpected error", attempt_id)
        return _record_outcome(session, attempt_id, "unknown", exc)
    return _record_success(session, attempt_id, charge)


def _record_outcome(session: Session, attempt_id: int, status: str, error: Exception) -> str:
    try:
        attempt = session.get(CardTopup, attempt_id, with_for_update=True, populate_existing=True)
        if attempt.status in UNRESOLVED:
            attempt.status = status
            attempt.error_code = (getattr(error, "code", None) or type(error).__name__)[:80]
            attempt.error_message = str(error)[:2000]
            attempt.payment_intent_id = getattr(error, "payment_intent_id", None) or attempt.payment_intent_id
        status = attempt.status
        session.commit()
    except Exception:
        session.rollback()
        raise
    return status


def _record_success(session: Session, attempt_id: int, charge: gateway.Charge) -> str:
    try:
        attempt = session.get(CardTopup, attempt_id, with_for_update=True, populate_existing=True)
        attempt.status = "succeeded"
        attempt.payment_intent_id = charge.payment_intent_id
        attempt.error_code = attempt.error_message = None
        topups.credit_topup(
            session, attempt.customer_id, payment_intent_id=charge.payment_intent_id, amount_cents=charge.amount_cents
        )
        session.commit()
    except Exception:
        session.rollback()
        raise
    return "succeeded"


def redrive_unresolved_card_topups(session: Session, older_than: timedelta = REDRIVE_MIN_AGE, limit: int = 200) -> int:
    """Re-send every `pending`/`unknown` card top-up older than `older_than` with its own key (never
    a new charge) and record the outcome. Safe at any frequency and concurrently with itself: the
    key makes Stripe answer the same, and crediting is idempotent. Returns how many were resolved."""
    cutoff = utcnow() - older_than
    rows = session.execute(
        select(CardTopup.id, CardTopup.customer_id, Card.stripe_payment_method_id)
        .join(Card, Card.id == CardTopup.card_id)
        .where(CardTopup.status.in_(UNRESOLVED), CardTopup.updated_at <= cutoff)
        .order_by(CardTopup.id)
        .limit(limit)
    ).all()
    session.rollback()
    resolved = 0
    for attempt_id, customer_id, payment_method_id in rows:
        try:
            stripe_customer_id = ensure_stripe_customer(session, customer_id)
            status = _send(session, attempt_id, stripe_customer_id, payment_method_id)
        except Exception:
            session.rollback()
            log.exception("card top-up %s: re-drive failed; the next run retries", attempt_id)
            continue
        if status not in UNRESOLVED:
            resolved += 1
        else:
            _touch(session, attempt_id)
    return resolved


def _touch(session: Session, attempt_id: int) -> None:
    """Still unknown: move `updated_at` so the next run waits its turn (oldest first)."""
    attempt = session.get(CardTopup, attempt_id, populate_existing=True)
    attempt.updated_at = utcnow()
    session.commit()
