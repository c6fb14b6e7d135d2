"""Applying Stripe events (from the signed webhook or the reconciliation job), exactly once.

`apply_event` first checks the event's shape (app.payments.event_shape.parse_event): a malformed
event is recorded as ignored (with what was wrong) and refused with `MalformedEvent`, so no handler
ever sees a field of the wrong type. It then inserts the event id into `stripe_events` *first* and
applies the handler in the same transaction: a concurrent duplicate blocks on the primary key, then
finds the row and does nothing; a handler failure rolls back the event row too, so Stripe's retry
(or the reconciler) applies it later. Handlers are idempotent anyway (ledger keys, unique
payment-method ids), so out-of-order and repeated related events are harmless.

The common delivery, a payment_intent.succeeded top-up, is claimed and applied by one statement on
PostgreSQL (`topups.claim_and_credit_payment_intent_event`: same rows, same keys, one round trip and
one commit); whatever that statement refuses is applied here the general way.
"""

import logging

from sqlalchemy import Integer, bindparam, select, text, update
from sqlalchemy.orm import Session

from app.billing import cards, topups
from app.billing.stripe_customers import customer_id_for
from app.models import ChargeAttempt, User
from app.models.base import UTCDateTime, utcnow
from app.models.stripe_events import CashRefund, PaymentDispute, Topup
from app.payments import gateway
from app.payments.event_shape import MalformedEvent, parse_event

log = logging.getLogger(__name__)

CLOSED_DISPUTE_CLEARS_FLAG = ("won", "warning_closed")


def _id(value):
    return value.get("id") if isinstance(value, dict) else value


# Built once (every delivery runs it); PostgreSQL and SQLite share the syntax.
_CLAIM_EVENT = (
    text(
        "INSERT INTO stripe_events (id, type, created, customer_id, source, processed_at, outcome) "
        "VALUES (:id, :type, :created, "
        "(SELECT customer_id FROM billing_customers WHERE stripe_customer_id = :stripe_customer), "
        ":source, :processed_at, :outcome) "
        "ON CONFLICT (id) DO NOTHING RETURNING customer_id"
    )
    .bindparams(bindparam("processed_at", type_=UTCDateTime()))
    .columns(customer_id=Integer())
)
_RECORD_IGNORED = text(
    "INSERT INTO stripe_events (id, type, created, source, processed_at, outcome, note) "
    "VALUES (:id, :type, :created, :source, :processed_at, 'ignored', :note) ON CONFLICT (id) DO NOTHING"
).bindparams(bindparam("processed_at", type_=UTCDateTime()))


def apply_event(session: Session, event, *, source: str = "webhook", payload: bytes | None = None) -> bool:
    """Record and apply one verified event. Returns False for an event already processed. Commits.
    Raises MalformedEvent (after recording the event as ignored) when its shape is wrong."""
    try:
        parsed = parse_event(event, payload)
    except MalformedEvent as malformed:
        record_ignored_event(session, malformed, source=source)
        raise
    if parsed.type == "payment_intent.succeeded":
        # the common delivery, a top-up: claimed and credited by one statement where it can be
        applied = topups.claim_and_credit_payment_intent_event(
            session, event_id=parsed.id, created=parsed.created, stripe_customer=parsed.stripe_customer,
            intent=parsed.object, source=source,
        )
        if applied is not None:
            return applied
    handler = HANDLERS.get(parsed.type)
    # One statement: map the Stripe customer and claim the event id (the unique key).
    recorded = (
        session.connection()
        .execute(
            _CLAIM_EVENT,
            {
                "id": parsed.id,
                "type": parsed.type,
                "created": parsed.created,
                "stripe_customer": parsed.stripe_customer,
                "source": source,
                "processed_at": utcnow(),
                "outcome": "applied" if handler is not None else "ignored",
            },
        )
        .first()
    )
    if recorded is None:
        session.rollback()
        return False
    customer_id = recorded.customer_id
    try:
        if handler is not None:
            handler(session, parsed.object, customer_id)
        session.commit()
    except Exception:
        session.rollback()
        raise
    return True


def record_ignored_event(session: Session, malformed: MalformedEvent, *, source: str) -> None:
    """Record a malformed event once, as ignored, with what was wrong with it. Commits."""
    try:
        session.execute(_RECORD_IGNORED, {
            "id": malformed.record_id, "type": malformed.event_type, "created": malformed.created,
            "source": source, "processed_at": utcnow(), "note": malformed.reason[:300],
        })
        session.commit()
    except Exception:
        session.rollback()
        raise


# ---------------------------------------------------------------- handlers ---
def _record_card(session: Session, customer_id: int | None, setup_intent_id: str | None) -> None:
    if customer_id is None or not setup_intent_id:
        return
    try:
        pm = cards.payment_method_from_setup_intent(setup_intent_id)
        cards.record_payment_method(session, customer_id, pm)
    except (cards.DuplicateCard, cards.CardSetupIncomplete, gateway.PaymentRequestInvalid) as exc:
        # permanent outcomes: recording the event stops Stripe from retrying it
        log.info("setup intent %s not recorded: %s", setup_intent_id, exc)


def on_checkout_session_completed(session: Session, obj: dict, customer_id: int | None) -> None:
    if obj.get("mode") == "setup":
        _record_card(session, customer_id, _id(obj.get("setup_intent")))
    elif obj.get("mode") == "payment":
        topups.credit_from_checkout_session(session, obj, customer_id)


def on_setup_intent_succeeded(session: Session, obj: dict, customer_id: int | None) -> None:
    _record_card(session, customer_id, obj.get("id"))


def on_payment_intent_succeeded(session: Session, obj: dict, customer_id: int | None) -> None:
    topups.credit_from_payment_intent(session, obj, customer_id)


def on_payment_intent_failed(session: Session, obj: dict, customer_id: int | None) -> None:
    # Nothing to undo: a top-up is credited only on success, and settlement records its own
    # charge attempts synchronously. Kept for the audit trail (the event row).
    error = obj.get("last_payment_error") or {}
    log.info("payment intent %s failed for customer %s: %s", obj.get("id"), customer_id, error.get("code"))


def on_payment_method_detached(session: Session, obj: dict, customer_id: int | None) -> None:
    cards.handle_payment_method_detached(session, obj["id"])


def on_payment_method_updated(session: Session, obj: dict, customer_id: int | None) -> None:
    if obj.get("card"):
        cards.handle_payment_method_updated(session, gateway.payment_method_info(obj))


def _settle_refund_part(session: Session, refund: dict) -> bool:
    """A refund Stripe confirms: mark our pending part (found by its metadata) succeeded."""
    part_id = (refund.get("metadata") or {}).get("paydesk_cash_refund_id")
    if not part_id or not str(part_id).isdigit() or refund.get("status") not in ("succeeded", "pending"):
        return False
    part = session.get(CashRefund, int(part_id))
    if part is None:
        return False
    if part.status == "pending":
        part.status, part.stripe_refund_id, part.error_message = "succeeded", refund.get("id"), None
    return True


def on_refund_event(session: Session, obj: dict, customer_id: int | None) -> None:
    if not _settle_refund_part(session, obj):
        log.warning("refund %s was not made by Paydesk; review the customer's balance", obj.get("id"))


def on_charge_refunded(session: Session, obj: dict, customer_id: int | None) -> None:
    for refund in ((obj.get("refunds") or {}).get("data")) or []:
        if not _settle_refund_part(session, refund):
            log.warning("charge %s refunded outside Paydesk (%s); review the balance", obj.get("id"), refund.get("id"))


def _dispute_customer(session: Session, obj: dict) -> tuple[int | None, str | None]:
    pi_id = _id(obj.get("payment_intent"))
    if pi_id:
        found = session.scalar(select(Topup.customer_id).where(Topup.payment_intent_id == pi_id))
        found = found or session.scalar(
            select(ChargeAttempt.customer_id).where(ChargeAttempt.payment_intent_id == pi_id).limit(1)
        )
        if found:
            return found, pi_id
    charge_id = _id(obj.get("charge"))
    if charge_id:
        charge = gateway.retrieve_charge(charge_id)
        return customer_id_for(session, _id(charge.get("customer"))), pi_id or _id(charge.get("payment_intent"))
    return None, pi_id


def _refresh_disputed_flag(session: Session, customer_id: int) -> None:
    still_open = session.scalar(
        select(PaymentDispute.id)
        .where(
            PaymentDispute.customer_id == customer_id,
            PaymentDispute.status.not_in(CLOSED_DISPUTE_CLEARS_FLAG),
        )
        .limit(1)
    )
    session.execute(update(User).where(User.id == customer_id).values(disputed=still_open is not None))


def on_dispute_created(session: Session, obj: dict, customer_id: int | None) -> None:
    """Flag the payment and the customer (a disputed customer cannot deploy)."""
    dispute = session.get(PaymentDispute, obj["id"])
    customer_id, pi_id = _dispute_customer(session, obj)
    if dispute is None:
        dispute = PaymentDispute(id=obj["id"])
        session.add(dispute)
    dispute.customer_id = customer_id
    dispute.charge_id = _id(obj.get("charge"))
    dispute.payment_intent_id = pi_id
    dispute.amount_cents = int(obj.get("amount") or 0)
    dispute.reason = obj.get("reason")
    if dispute.closed_at is None:
        dispute.status = obj.get("status") or "needs_response"
    session.flush()
    if pi_id:
        session.execute(
            update(Topup).where(Topup.payment_intent_id == pi_id, Topup.disputed_at.is_(None)).values(disputed_at=utcnow())
        )
    if customer_id:
        _refresh_disputed_flag(session, customer_id)


def on_dispute_closed(session: Session, obj: dict, customer_id: int | None) -> None:
    """A closed dispute keeps its outcome; a lost one keeps the customer flagged for an admin."""
    dispute = session.get(PaymentDispute, obj["id"])
    if dispute is None:
        on_dispute_created(session, obj, customer_id)
        dispute = session.get(PaymentDispute, obj["id"])
    dispute.status = obj.get("status") or "closed"
    dispute.closed_at = dispute.closed_at or utcnow()
    session.flush()
    if dispute.customer_id:
        _refresh_disputed_flag(session, dispute.customer_id)


HANDLERS = {
    "checkout.session.completed": on_checkout_session_completed,
    "setup_intent.succeeded": on_setup_intent_succeeded,
    "payment_intent.succeeded": on_payment_intent_succeeded,
    "payment_intent.payment_failed": on_payment_intent_failed,
    "payment_method.detached": on_payment_method_detached,
    "payment_method.updated": on_payment_method_updated,
    "payment_method.automatically_updated": on_payment_method_updated,
    "charge.refunded": on_charge_refunded,
    "refund.created": on_refund_event,
    "refund.updated": on_refund_event,
    "charge.refund.updated": on_refund_event,
    "charge.dispute.created": on_dispute_created,
    "charge.dispute.closed": on_dispute_closed,
}
