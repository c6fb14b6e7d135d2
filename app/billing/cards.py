"""Cards (payment methods): added through Stripe Checkout in setup mode, recorded only from
Stripe's own data, unique per customer by fingerprint, one default.

Every change for a customer runs under a lock on the customer's `users` row, so the redirect
handler, the webhook and the customer's own clicks serialise (first card = default, duplicate
detection and "last usable card" checks hold under concurrency).
"""

import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.billing import notifications
from app.billing.settlement_requests import request_settlement
from app.billing.stripe_customers import customer_id_for, ensure_stripe_customer
from app.models import Card, User
from app.models.base import utcnow
from app.payments import gateway

log = logging.getLogger(__name__)


class CardError(Exception):
    """Base of card errors; `str(error)` is fit for the customer."""


class DuplicateCard(CardError):
    def __init__(self, card: Card | None = None):
        super().__init__("This card is already on your account.")
        self.card = card


class LastCardNeeded(CardError):
    def __init__(self):
        super().__init__(
            "You cannot remove your last card while you have running deployments that your voucher "
            "balance does not cover. Add another card first, or stop those deployments."
        )


class CardSetupIncomplete(CardError):
    def __init__(self, message: str = "The card was not saved: the card setup was not completed."):
        super().__init__(message)


class CardNotFound(CardError):
    def __init__(self):
        super().__init__("This card is no longer on your account.")


class CardNotUsable(CardError):
    def __init__(self):
        super().__init__("This card has expired and cannot be the default.")


def _lock_customer(session: Session, customer_id: int) -> User:
    """Serialise card changes of one customer (redirect, webhook and clicks may race).

    PostgreSQL: a row lock. SQLite (embedded default) ignores FOR UPDATE, so a no-op UPDATE takes
    the database write lock for the rest of the transaction instead."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(User).where(User.id == customer_id).values(id=User.id))
    return session.scalar(select(User).where(User.id == customer_id).with_for_update())


def active_cards(session: Session, customer_id: int) -> list[Card]:
    """Cards not removed: default first, then newest first (what the cards page lists)."""
    return list(
        session.scalars(
            select(Card)
            .where(Card.customer_id == customer_id, Card.removed_at.is_(None))
            .order_by(Card.is_default.desc(), Card.created_at.desc(), Card.id.desc())
        )
    )


def usable_cards(session: Session, customer_id: int, now: datetime | None = None) -> list[Card]:
    """Cards that can be charged: not removed, not expired; default first, then newest first."""
    now = now or utcnow()
    return [card for card in active_cards(session, customer_id) if not card.is_expired(now)]


# ------------------------------------------------------------------ adding ---
def start_card_setup(session: Session, customer_id: int, *, success_url: str, cancel_url: str) -> str:
    """Create a Checkout session in setup mode; returns the URL to send the customer to."""
    stripe_customer_id = ensure_stripe_customer(session, customer_id)
    checkout = gateway.create_checkout_session(
        mode="setup",
        stripe_customer_id=stripe_customer_id,
        success_url=success_url,
        cancel_url=cancel_url,
        currency=_currency(),
        metadata={"paydesk_purpose": "card_setup", "paydesk_customer_id": str(customer_id)},
    )
    return checkout.url


def _currency() -> str:
    from flask import current_app

    return current_app.config["CURRENCY"]


def record_payment_method(session: Session, customer_id: int, pm: gateway.PaymentMethodInfo) -> Card:
    """Record a card from Stripe's payment-method data. Does not commit (caller's unit of work).

    Idempotent on the payment method id. A card whose fingerprint is already on the account is
    detached at Stripe and DuplicateCard is raised. The first card becomes the default. A newly
    recorded card requests settlement.
    """
    _lock_customer(session, customer_id)
    existing = session.scalar(select(Card).where(Card.stripe_payment_method_id == pm.id))
    if existing is not None:
        if existing.customer_id != customer_id:
            raise CardSetupIncomplete()
        return existing
    duplicate = session.scalar(
        select(Card).where(
            Card.customer_id == customer_id, Card.fingerprint == pm.fingerprint, Card.removed_at.is_(None)
        )
    )
    if duplicate is not None:
        gateway.detach_payment_method(pm.id)
        raise DuplicateCard(duplicate)
    has_default = session.scalar(
        select(Card.id).where(Card.customer_id == customer_id, Card.removed_at.is_(None), Card.is_default.is_(True))
    )
    card = Card(
        customer_id=customer_id,
        stripe_payment_method_id=pm.id,
        fingerprint=pm.fingerprint,
        brand=pm.brand,
        last4=pm.last4,
        exp_month=pm.exp_month,
        exp_year=pm.exp_year,
        is_default=has_default is None,
    )
    session.add(card)
    session.flush()
    request_settlement(session, customer_id)
    notifications.announce_card_added(session, card, utcnow())
    return card


def payment_method_from_setup_intent(setup_intent_id: str | None) -> gateway.PaymentMethodInfo:
    if not setup_intent_id:
        raise CardSetupIncomplete()
    intent = gateway.retrieve_setup_intent(setup_intent_id)
    if intent.get("status") != "succeeded" or not intent.get("payment_method"):
        raise CardSetupIncomplete("Your card could not be saved. Please try another card.")
    pm_id = intent["payment_method"]
    pm_id = pm_id["id"] if isinstance(pm_id, dict) else pm_id
    return gateway.retrieve_payment_method(pm_id)


def add_card_from_checkout(session: Session, customer_id: int, checkout_session_id: str) -> Card:
    """Success redirect of the setup Checkout: retrieve the session, its setup intent and the
    payment method server-side and record the card. Commits. Raises DuplicateCard,
    CardSetupIncomplete or a gateway error."""
    checkout = gateway.retrieve_checkout_session(checkout_session_id)
    if checkout.get("mode") != "setup" or customer_id_for(session, checkout.get("customer")) != customer_id:
        raise CardSetupIncomplete()
    setup_intent = checkout.get("setup_intent")
    setup_intent = setup_intent["id"] if isinstance(setup_intent, dict) else setup_intent
    pm = payment_method_from_setup_intent(setup_intent)
    try:
        card = record_payment_method(session, customer_id, pm)
        session.commit()
    except Exception:
        session.rollback()
        raise
    return card


# ------------------------------------------------------- default / remove ---
def set_default_card(session: Session, customer_id: int, card_id: int, now: datetime | None = None) -> Card:
    """Make one usable card the default and request settlement. Commits."""
    _lock_customer(session, customer_id)
    card = session.scalar(
        select(Card).where(Card.id == card_id, Card.customer_id == customer_id, Card.removed_at.is_(None))
    )
    if card is None:
        session.rollback()
        raise CardNotFound()
    if card.is_expired(now or utcnow()):
        session.rollback()
        raise CardNotUsable()
    previous = next((other for other in active_cards(session, customer_id) if other.is_default), None)
    for other in active_cards(session, customer_id):
        other.is_default = other.id == card.id
    request_settlement(session, customer_id)
    if previous is None or previous.id != card.id:
        session.flush()
        notifications.announce_default_changed(session, card, previous, now or utcnow())
    session.commit()
    return card


def _active_deployments_cost(session: Session, customer_id: int) -> int:
    """What running deployments will cost until the end of the period (usage issue's function);
    0 while that module does not exist yet."""
    try:
        from app.billing.usage import active_deployments_cost_until_period_end
    except ImportError:
        return 0
    return int(active_deployments_cost_until_period_end(session, customer_id))


def remove_card(session: Session, customer_id: int, card_id: int, now: datetime | None = None) -> None:
    """Detach the card at Stripe and mark it removed. Commits.

    Refused (LastCardNeeded) when it is the last usable card and running deployments are not
    covered by the voucher balance. If it was the default, the newest usable card becomes default.
    """
    now = now or utcnow()
    user = _lock_customer(session, customer_id)
    card = session.scalar(
        select(Card).where(Card.id == card_id, Card.customer_id == customer_id, Card.removed_at.is_(None))
    )
    if card is None:
        session.rollback()
        raise CardNotFound()
    others = [c for c in usable_cards(session, customer_id, now) if c.id != card.id]
    if not card.is_expired(now) and not others:
        cost = _active_deployments_cost(session, customer_id)
        if cost > 0 and user.voucher_balance_cents < cost:
            session.rollback()
            raise LastCardNeeded()
    try:
        gateway.detach_payment_method(card.stripe_payment_method_id)
    except Exception:
        session.rollback()
        raise
    _mark_removed(session, card, now)
    session.commit()


def _mark_removed(session: Session, card: Card, now: datetime) -> None:
    """Mark the card removed and tell the customer (a security notice); when it was the default,
    the newest usable card becomes the default, and the notice says so (never silently)."""
    was_default = card.is_default
    card.removed_at = now
    card.is_default = False
    session.flush()
    replacement = None
    if was_default:
        replacement = next(iter(usable_cards(session, card.customer_id, now)), None)
        if replacement is not None:
            replacement.is_default = True
            request_settlement(session, card.customer_id)
            session.flush()
    notifications.announce_card_removed(session, card, now, replacement)


# ------------------------------------------------------ webhook handlers ---
def handle_payment_method_detached(session: Session, payment_method_id: str) -> None:
    """Detached at Stripe (by us or elsewhere): the card is no longer usable. Does not commit."""
    card = session.scalar(select(Card).where(Card.stripe_payment_method_id == payment_method_id))
    if card is None or card.removed_at is not None:
        return
    _lock_customer(session, card.customer_id)
    session.refresh(card)
    if card.removed_at is None:
        _mark_removed(session, card, utcnow())


def handle_payment_method_updated(session: Session, pm: gateway.PaymentMethodInfo) -> None:
    """Expiry (or brand) changed at Stripe, e.g. the bank renewed the card. Does not commit."""
    card = session.scalar(select(Card).where(Card.stripe_payment_method_id == pm.id))
    if card is None:
        return
    if pm.exp_month and pm.exp_year:
        card.exp_month, card.exp_year = pm.exp_month, pm.exp_year
    if pm.last4 and pm.last4 != "????":
        card.last4 = pm.last4
