"""Balance top-ups paid through Stripe Checkout (payment mode).

The cash balance is credited exactly once per payment intent, whichever comes first — the
success redirect (verified server-side) or a webhook (checkout.session.completed or
payment_intent.succeeded): the `topups` row is unique on the payment intent and the ledger
entry's idempotency key is `topup:<payment_intent_id>`.
"""

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from app.billing import notifications
from app.billing.ledger import post_entry
from app.billing.money import format_money
from app.billing.settlement_requests import request_settlement
from app.billing.stripe_customers import customer_id_for, ensure_stripe_customer
from app.models.base import UTCDateTime, utcnow
from app.models.stripe_events import Topup
from app.payments import gateway

PURPOSE = "topup"


class TopupError(Exception):
    """Base of top-up errors; `str(error)` is fit for the customer."""


class TopupAmountOutOfRange(TopupError):
    pass


class TopupNotPaid(TopupError):
    def __init__(self):
        super().__init__("Your payment did not go through, so your balance was not changed.")


@dataclass(frozen=True)
class Credited:
    payment_intent_id: str
    amount_cents: int
    created: bool


def check_topup_amount(amount_cents: int) -> None:
    low, high = current_app.config["TOPUP_MIN_CENTS"], current_app.config["TOPUP_MAX_CENTS"]
    if amount_cents < low:
        raise TopupAmountOutOfRange(f"The smallest top-up is {format_money(low)}.")
    if amount_cents > high:
        raise TopupAmountOutOfRange(f"The largest top-up is {format_money(high)}.")


def start_topup(session: Session, customer_id: int, amount_cents: int, *, success_url: str, cancel_url: str) -> str:
    """Create a Checkout session in payment mode for `amount_cents`; returns its URL.
    Nothing is credited here: only Stripe's confirmation of the payment credits the balance."""
    check_topup_amount(amount_cents)
    stripe_customer_id = ensure_stripe_customer(session, customer_id)
    checkout = gateway.create_checkout_session(
        mode="payment",
        stripe_customer_id=stripe_customer_id,
        success_url=success_url,
        cancel_url=cancel_url,
        currency=current_app.config["CURRENCY"],
        amount_cents=amount_cents,
        description="Paydesk balance top-up",
        metadata={"paydesk_purpose": PURPOSE, "paydesk_customer_id": str(customer_id)},
    )
    return checkout.url


# Built once (every top-up webhook runs it); PostgreSQL and SQLite share the syntax.
_INSERT_TOPUP = text(
    "INSERT INTO topups (customer_id, payment_intent_id, checkout_session_id, amount_cents, refunded_cents, "
    "ledger_entry_id, created_at) VALUES (:customer_id, :payment_intent_id, :checkout_session_id, :amount_cents, 0, "
    ":ledger_entry_id, :created_at) ON CONFLICT (payment_intent_id) DO NOTHING"
).bindparams(bindparam("created_at", type_=UTCDateTime()))


def credit_topup(
    session: Session,
    customer_id: int,
    *,
    payment_intent_id: str,
    amount_cents: int,
    checkout_session_id: str | None = None,
) -> Credited:
    """Credit a paid top-up to the cash balance, once per payment intent, and request settlement.
    Does not commit (the caller's unit of work: a webhook event or the redirect).

    The ledger entry (idempotency key `topup:<pi>`) is the exactly-once guard: a concurrent
    second credit waits on its unique key and then finds the first one; the `topups` row
    is written only by the credit that created the entry."""
    posted = post_entry(
        session,
        customer_id=customer_id,
        account="cash",
        amount_cents=amount_cents,
        kind="topup",
        idempotency_key=f"topup:{payment_intent_id}",
        reference=payment_intent_id,
        note="Card top-up",
    )
    if posted.created:
        session.connection().execute(
            _INSERT_TOPUP,
            {
                "customer_id": customer_id,
                "payment_intent_id": payment_intent_id,
                "checkout_session_id": checkout_session_id,
                "amount_cents": amount_cents,
                "ledger_entry_id": posted.entry.id,
                "created_at": utcnow(),
            },
        )
        request_settlement(session, customer_id)
        notifications.announce_topup(session, customer_id, payment_intent_id=payment_intent_id,
                                     amount_cents=amount_cents, at=posted.entry.created_at or utcnow())
    return Credited(payment_intent_id, posted.entry.amount_cents, posted.created)


def credit_from_checkout_session(session: Session, checkout: dict, customer_id: int | None) -> Credited | None:
    """Credit from a (server-side retrieved or signed) Checkout session if it is a paid top-up of
    `customer_id` (the customer its Stripe customer maps to). Returns None when it is not ours or
    not paid. Does not commit."""
    if checkout.get("mode") != "payment":
        return None
    if customer_id is None or customer_id_for(session, checkout.get("customer")) != customer_id:
        return None
    if checkout.get("payment_status") != "paid" or not checkout.get("payment_intent"):
        return None
    if (checkout.get("currency") or current_app.config["CURRENCY"]).lower() != current_app.config["CURRENCY"]:
        return None
    pi = checkout["payment_intent"]
    pi_id = pi["id"] if isinstance(pi, dict) else pi
    return credit_topup(
        session,
        customer_id,
        payment_intent_id=pi_id,
        amount_cents=int(checkout.get("amount_total") or 0),
        checkout_session_id=checkout.get("id"),
    )


def credit_from_payment_intent(session: Session, intent: dict, customer_id: int | None) -> Credited | None:
    """payment_intent.succeeded for a top-up (marked by its metadata) of `customer_id` (the
    customer its Stripe customer maps to). Does not commit."""
    if (intent.get("metadata") or {}).get("paydesk_purpose") != PURPOSE or intent.get("status") != "succeeded":
        return None
    if customer_id is None:
        return None
    amount = int(intent.get("amount_received") or intent.get("amount") or 0)
    if amount <= 0:
        return None
    return credit_topup(session, customer_id, payment_intent_id=intent["id"], amount_cents=amount)


def complete_topup_from_checkout(session: Session, customer_id: int, checkout_session_id: str) -> Credited:
    """Success redirect: retrieve the session from Stripe and credit it (once). Commits.
    Raises TopupNotPaid when Stripe does not confirm the payment for this customer."""
    checkout = gateway.retrieve_checkout_session(checkout_session_id)
    try:
        credited = credit_from_checkout_session(session, checkout, customer_id)
        if credited is None:
            session.rollback()
            raise TopupNotPaid()
        session.commit()
    except Exception:
        session.rollback()
        raise
    return credited


def recent_topups(session: Session, customer_id: int, limit: int = 10) -> list[Topup]:
    return list(
        session.scalars(
            select(Topup).where(Topup.customer_id == customer_id).order_by(Topup.created_at.desc(), Topup.id.desc()).limit(limit)
        )
    )
