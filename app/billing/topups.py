"""Balance top-ups paid through Stripe Checkout (payment mode).

The cash balance is credited exactly once per payment intent, whichever comes first — the
success redirect (verified server-side) or a webhook (checkout.session.completed or
payment_intent.succeeded): the `topups` row is unique on the payment intent and the ledger
entry's idempotency key is `topup:<payment_intent_id>`.
"""

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import Integer, String, bindparam, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.billing import notifications, settlement_requests
from app.billing.ledger import post_entry
from app.billing.money import format_money
from app.billing.settlement_requests import request_settlement
from app.billing.stripe_customers import customer_id_for, ensure_stripe_customer
from app.models.base import UTCDateTime, utcnow
from app.models.notification import Notification
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


def topup_amount(intent: dict) -> int | None:
    """The amount a payment intent tops up: None unless it is a succeeded top-up (marked by its
    metadata) of a positive amount."""
    if (intent.get("metadata") or {}).get("paydesk_purpose") != PURPOSE or intent.get("status") != "succeeded":
        return None
    amount = int(intent.get("amount_received") or intent.get("amount") or 0)
    return amount if amount > 0 else None


def credit_from_payment_intent(session: Session, intent: dict, customer_id: int | None) -> Credited | None:
    """payment_intent.succeeded for a top-up (marked by its metadata) of `customer_id` (the
    customer its Stripe customer maps to). Does not commit."""
    amount = topup_amount(intent)
    if amount is None or customer_id is None:
        return None
    return credit_topup(session, customer_id, payment_intent_id=intent["id"], amount_cents=amount)


# PostgreSQL: a payment_intent.succeeded top-up event applied by one statement, built once. Each
# part writes only from the row the part before it returned, so it is all or nothing:
#   claim    the event id (`stripe_events`, the exactly-once key; the Stripe customer mapped inside):
#            a concurrent duplicate waits on the key and then writes nothing at all;
#   entry    the ledger entry (key `topup:<pi>`), a plain INSERT: a key already used (the same payment
#            credited through another event) aborts the statement with a unique violation;
#   moved    the cash balance, by the entry's amount: the CHECK constraints on `users` abort the
#            statement when it would leave its bounds (no row is ever moved without its entry);
#   topup    the `topups` row; request: the settlement request (outbox), coalescing as
#            app.billing.settlement_requests does; receipt: the receipt notification (outbox),
#            `skipped` for a customer who turned receipts off (read from the row `moved` locked).
# An aborted statement wrote nothing; the caller then applies the event the general way, which
# tells those cases apart exactly as it always has.
_CLAIM_AND_CREDIT = (
    text(
        "WITH claim AS (INSERT INTO stripe_events (id, type, created, customer_id, source, processed_at, outcome) "
        "VALUES (:event_id, 'payment_intent.succeeded', :created, "
        "(SELECT customer_id FROM billing_customers WHERE stripe_customer_id = :stripe_customer), "
        ":source, :now, 'applied') ON CONFLICT (id) DO NOTHING RETURNING customer_id), "
        "entry AS (INSERT INTO ledger_entries "
        "(customer_id, account, amount_cents, kind, reference, idempotency_key, note, created_at) "
        "SELECT customer_id, 'cash', :amount_cents, 'topup', :payment_intent_id, :idempotency_key, "
        "'Card top-up', :now FROM claim WHERE customer_id IS NOT NULL RETURNING id, customer_id), "
        "moved AS (UPDATE users SET cash_balance_cents = cash_balance_cents + :amount_cents FROM entry "
        "WHERE users.id = entry.customer_id RETURNING users.id, users.email_receipts), "
        "topup AS (INSERT INTO topups (customer_id, payment_intent_id, checkout_session_id, amount_cents, "
        "refunded_cents, ledger_entry_id, created_at) "
        "SELECT customer_id, :payment_intent_id, NULL, :amount_cents, 0, id, :now FROM entry "
        "ON CONFLICT (payment_intent_id) DO NOTHING), "
        "request AS (INSERT INTO settlement_requests (customer_id, generation, requested_at, enqueued_at) "
        "SELECT customer_id, 1, :now, :now FROM entry " + settlement_requests.UPSERT_ON_CONFLICT_SQL + "), "
        "receipt AS (INSERT INTO notifications (customer_id, kind, key, subject, template, context, attachment, "
        "status, message_id, created_at, next_attempt_at, attempts, skipped_at) "
        "SELECT moved.id, :n_kind, :n_key, :n_subject, :n_template, :n_context, NULL, "
        "CASE WHEN :n_optional AND NOT moved.email_receipts THEN 'skipped' ELSE 'pending' END, "
        ":n_message_id, :now, :n_next_attempt_at, 0, "
        "CASE WHEN :n_optional AND NOT moved.email_receipts THEN :now END FROM moved "
        "ON CONFLICT (key) DO NOTHING RETURNING id, status) "
        "SELECT (SELECT count(*) FROM claim) AS claimed, (SELECT customer_id FROM entry) AS credited_customer, "
        "(SELECT enqueued_at FROM request) AS enqueued_at, "
        "(SELECT id FROM receipt) AS receipt_id, (SELECT status FROM receipt) AS receipt_status"
    )
    .bindparams(
        bindparam("now", type_=UTCDateTime()),
        bindparam("coalesce_after", type_=UTCDateTime()),
        bindparam("n_next_attempt_at", type_=UTCDateTime()),
        bindparam("n_context", type_=Notification.__table__.c.context.type),
    )
    .columns(claimed=Integer(), credited_customer=Integer(), enqueued_at=UTCDateTime(), receipt_id=Integer(),
             receipt_status=String())
)


def claim_and_credit_payment_intent_event(session: Session, *, event_id: str, created: int,
                                          stripe_customer: str | None, intent: dict, source: str) -> bool | None:
    """Apply a payment_intent.succeeded top-up event in one statement, which is its own transaction
    (PostgreSQL, a session that has not begun one): the claim, the credit, the `topups` row, the
    settlement request and the receipt commit together or not at all, with one round trip and
    one commit. Returns True when applied, False for an event already processed, and None when it
    must be applied the general way (not a top-up, not PostgreSQL, a session already in a
    transaction, or the statement refused: the key already used, a balance bound) — nothing was
    written then. Ends the session's transaction (commits, so the after-commit hooks enqueue)."""
    amount = topup_amount(intent)
    if amount is None or session.in_transaction() or session.get_bind().dialect.name != "postgresql":
        return None
    now = utcnow()
    receipt = notifications.topup_receipt(intent["id"], amount, now)
    params = {
        "event_id": event_id, "created": created, "stripe_customer": stripe_customer, "source": source,
        "now": now, "amount_cents": amount, "payment_intent_id": intent["id"],
        "idempotency_key": f"topup:{intent['id']}", "coalesce_after": settlement_requests.coalesce_after(now),
        "n_kind": receipt["kind"], "n_key": receipt["key"], "n_subject": receipt["subject"],
        "n_template": receipt["template"], "n_context": receipt["context"],
        "n_optional": notifications.is_optional(receipt["kind"]),
        "n_message_id": notifications.message_id_for(receipt["key"]),
        "n_next_attempt_at": now + notifications.REQUEUE_AFTER,
    }
    try:
        connection = session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        row = connection.execute(_CLAIM_AND_CREDIT, params).one()
    except IntegrityError:
        session.rollback()
        return None
    except Exception:
        session.rollback()
        raise
    if row.credited_customer is not None:
        settlement_requests.note_upserted(session, row.credited_customer, row.enqueued_at, now)
        if row.receipt_status == "pending":
            notifications.note_pending(session, [row.receipt_id])
    session.commit()
    return bool(row.claimed)


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
