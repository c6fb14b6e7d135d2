"""Stripe endpoints: Checkout return URLs and the signed webhook."""

import logging

from flask import Blueprint, current_app, flash, jsonify, redirect, request, url_for
from flask_login import current_user
from werkzeug.exceptions import RequestEntityTooLarge

from app.billing import cards, topups
from app.billing.ledger import BalanceLimitExceeded
from app.billing.money import format_money
from app.billing.stripe_events import apply_event
from app.extensions import csrf, db, limiter
from app.payments import gateway
from app.payments.event_shape import MalformedEvent
from app.web.helpers import customer_required

bp = Blueprint("stripe", __name__)
log = logging.getLogger(__name__)


def external_url(endpoint: str, **values) -> str:
    """An absolute URL built by the server from BASE_URL (never from the request's Host header or
    parameters), for Stripe Checkout's success and cancel URLs."""
    return current_app.config["BASE_URL"] + url_for(endpoint, **values)


def checkout_urls(kind: str) -> dict[str, str]:
    """success/cancel URLs for a Checkout session; Stripe fills in {CHECKOUT_SESSION_ID}."""
    return {
        "success_url": external_url(f"stripe.{kind}_return") + "?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": external_url(f"stripe.{kind}_cancel"),
    }


MAX_WEBHOOK_BYTES = 1024 * 1024  # Stripe's events are a few KiB


@limiter.request_filter
def _webhook_has_no_rate_limit() -> bool:
    """The webhook has no rate limit (every delivery is signed, and refusing one only makes Stripe
    retry it): say so up front, so Flask-Limiter does not resolve limits on every delivery."""
    return request.endpoint == "stripe.webhook"


@bp.post("/webhook")
@csrf.exempt
def webhook():
    request.max_content_length = MAX_WEBHOOK_BYTES
    try:
        payload = request.get_data()
    except RequestEntityTooLarge:
        return jsonify(error=f"payload larger than {MAX_WEBHOOK_BYTES // 1024} KiB"), 413
    try:
        event = gateway.verify_webhook(
            payload, request.headers.get("Stripe-Signature"), current_app.config["STRIPE_WEBHOOK_SECRET"]
        )
    except gateway.InvalidWebhook as exc:
        log.warning("rejected Stripe webhook: %s", exc)
        return jsonify(error="invalid signature or payload"), 400
    try:
        applied = apply_event(db.session, event, payload=payload)
    except MalformedEvent as exc:
        log.warning("ignored a malformed Stripe event (recorded as %s): %s", exc.record_id, exc.reason)
        return jsonify(error=f"malformed event: {exc.reason}", ignored=True), 400
    except gateway.PaymentRequestInvalid:
        # Stripe itself refused to look up what the event names: asking again will not help
        log.warning("Stripe event %s names objects Stripe does not know; not applied", event["id"], exc_info=True)
        return jsonify(error="the event names unknown Stripe objects"), 400
    except gateway.PaymentError:
        log.warning("Stripe event %s could not be applied now; Stripe will retry", event["id"], exc_info=True)
        return jsonify(error="temporarily unavailable"), 503
    except BalanceLimitExceeded:
        # Nothing was written (the transaction is rolled back): the event stays unprocessed, so Stripe's
        # retries and the events reconciliation keep it visible until an admin settles it by hand.
        db.session.rollback()
        log.error("Stripe event %s would take a balance past its limit; not applied", event["id"])
        return jsonify(error="the customer's balance would exceed its limit; not applied"), 422
    return jsonify(received=True, duplicate=not applied), 200


@bp.get("/checkout/card/return")
@customer_required
def card_return():
    session_id = request.args.get("session_id", "")
    try:
        card = cards.add_card_from_checkout(db.session, current_user.id, session_id)
    except cards.DuplicateCard as exc:
        flash(str(exc), "info")
    except (cards.CardError, gateway.PaymentError) as exc:
        flash(str(exc), "error")
    else:
        flash(f"Card saved: {card.brand.title()} ending in {card.last4}.", "success")
    return redirect(url_for("customer.cards"), 303)


@bp.get("/checkout/card/cancel")
@customer_required
def card_cancel():
    flash("Adding a card was cancelled. Nothing was saved.", "info")
    return redirect(url_for("customer.cards"), 303)


@bp.get("/checkout/topup/return")
@customer_required
def topup_return():
    session_id = request.args.get("session_id", "")
    try:
        credited = topups.complete_topup_from_checkout(db.session, current_user.id, session_id)
    except (topups.TopupError, gateway.PaymentError) as exc:
        flash(str(exc), "error")
    else:
        flash(f"Thank you: {format_money(credited.amount_cents)} was added to your balance.", "success")
    return redirect(url_for("customer.balance"), 303)


@bp.get("/checkout/topup/cancel")
@customer_required
def topup_cancel():
    flash("The top-up was cancelled. Nothing was charged.", "info")
    return redirect(url_for("customer.balance"), 303)
