"""The Stripe gateway: the only module that talks to Stripe (official `stripe` SDK).

`STRIPE_API_BASE` points it at the local emulator in development and tests; nothing here knows
that. Stripe errors become the typed domain errors below, each with a message fit for a customer.
Every call that moves money takes an idempotency key from the caller, so a retried job repeats
the original request instead of charging again. The SDK's own retries are off: retrying is the
caller's decision, always with the same key.
"""

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import stripe
from flask import current_app

log = logging.getLogger(__name__)
WEBHOOK_TOLERANCE_SECONDS = 300


class PaymentError(Exception):
    """Base of the gateway's errors; `str(error)` is safe to show to a customer."""

    code: str = "payment_error"

    def __init__(self, message: str, *, code: str | None = None, payment_intent_id: str | None = None):
        super().__init__(message)
        self.code = code or self.code
        self.payment_intent_id = payment_intent_id


class CardDeclined(PaymentError):
    code = "card_declined"


class AuthenticationRequired(PaymentError):
    """The bank wants the customer present (3-D Secure); an off-session charge cannot proceed."""

    code = "authentication_required"


class PaymentOutcomeUnknown(PaymentError):
    """Timeout, connection failure or a Stripe 5xx: the charge may or may not have happened.
    Never treat as failed; ask again later with the same idempotency key."""

    code = "outcome_unknown"


class PaymentRequestInvalid(PaymentError):
    """Stripe refused the request itself (bad parameters, unknown object, idempotency clash)."""

    code = "invalid_request"


class PaymentProviderUnavailable(PaymentError):
    """Stripe did not answer (or answered 5xx) a call that moves no money: nothing happened; try again."""

    code = "provider_unavailable"


class InvalidWebhook(Exception):
    """Missing or wrong Stripe-Signature, stale timestamp, or a body that is not an event."""


UNAVAILABLE_MESSAGE = "Our payment provider is not reachable right now. Nothing was charged; please try again in a minute."


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str


@dataclass(frozen=True)
class PaymentMethodInfo:
    id: str
    customer: str | None
    fingerprint: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int


@dataclass(frozen=True)
class Charge:
    payment_intent_id: str
    status: str
    amount_cents: int


def stripe_client() -> stripe.StripeClient:
    cfg = current_app.config
    base = cfg.get("STRIPE_API_BASE")
    return stripe.StripeClient(
        cfg["STRIPE_API_KEY"],
        base_addresses={"api": base} if base else None,
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=cfg.get("STRIPE_TIMEOUT_SECONDS", 20)),
    )


def translate_stripe_error(exc: stripe.StripeError) -> PaymentError:
    if isinstance(exc, stripe.CardError):
        pi = getattr(getattr(exc, "error", None), "payment_intent", None)
        pi_id = pi.get("id") if isinstance(pi, dict) else getattr(pi, "id", None)
        if exc.code == "authentication_required":
            return AuthenticationRequired(
                "Your bank asks you to confirm this payment; pay it from the invoice page.", payment_intent_id=pi_id
            )
        # Stripe's own reason: the decline code (insufficient_funds, …) and its message
        decline_code = getattr(getattr(exc, "error", None), "decline_code", None)
        message = getattr(exc, "user_message", None) or "Your card was declined."
        return CardDeclined(message, code=decline_code or exc.code or "card_declined", payment_intent_id=pi_id)
    if isinstance(exc, stripe.APIConnectionError | stripe.APIError | stripe.RateLimitError):
        return PaymentOutcomeUnknown("Our payment provider did not answer. Nothing is lost; we will retry shortly.")
    if isinstance(exc, stripe.IdempotencyError):
        return PaymentRequestInvalid("This payment was already attempted with different details.", code="idempotency_error")
    return PaymentRequestInvalid("The payment provider refused the request.", code=getattr(exc, "code", None))


def charge_off_session(
    *,
    stripe_customer_id: str,
    payment_method_id: str,
    amount_cents: int,
    currency: str,
    idempotency_key: str,
    metadata: dict[str, str] | None = None,
    description: str | None = None,
) -> Charge:
    """Charge a saved card without the customer present. Raises CardDeclined,
    AuthenticationRequired, PaymentOutcomeUnknown or PaymentRequestInvalid."""
    params = {
        "amount": amount_cents,
        "currency": currency,
        "customer": stripe_customer_id,
        "payment_method": payment_method_id,
        "off_session": True,
        "confirm": True,
        "metadata": metadata or {},
    }
    if description:
        params["description"] = description
    try:
        intent = stripe_client().v1.payment_intents.create(params=params, options={"idempotency_key": idempotency_key})
    except stripe.StripeError as exc:
        raise translate_stripe_error(exc) from exc
    if intent.status == "requires_action":
        raise AuthenticationRequired(
            "Your bank asks you to confirm this payment; pay it from the invoice page.", payment_intent_id=intent.id
        )
    if intent.status != "succeeded":
        raise CardDeclined("Your card was declined.", code=intent.status, payment_intent_id=intent.id)
    return Charge(intent.id, intent.status, intent.amount)


def retrieve_payment_intent(payment_intent_id: str):
    try:
        return stripe_client().v1.payment_intents.retrieve(payment_intent_id)
    except stripe.StripeError as exc:
        raise translate_stripe_error(exc) from exc


# ------------------------------------------------------------------ non-charge calls ---
def _call(fn, *args, **kwargs):
    """Run one SDK call; Stripe errors become domain errors (no money moves in these calls,
    so a timeout is simply "unavailable": nothing to reconcile)."""
    try:
        return fn(*args, **kwargs)
    except (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError) as exc:
        log.warning("stripe unavailable: %s", exc)
        raise PaymentProviderUnavailable(UNAVAILABLE_MESSAGE) from exc
    except stripe.StripeError as exc:
        raise translate_stripe_error(exc) from exc


def _plain(obj) -> dict:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def create_customer(*, email: str, name: str | None, customer_id: int, idempotency_key: str) -> str:
    """Create the Stripe customer for a Paydesk customer; returns its id (cus_…)."""
    params = {"email": email, "metadata": {"paydesk_customer_id": str(customer_id)}}
    if name:
        params["name"] = name
    created = _call(
        stripe_client().v1.customers.create, params=params, options={"idempotency_key": idempotency_key}
    )
    return created.id


def delete_customer(stripe_customer_id: str) -> None:
    """Best effort: remove a Stripe customer that lost a creation race (never stored by us)."""
    try:
        stripe_client().v1.customers.delete(stripe_customer_id)
    except stripe.StripeError:
        log.warning("could not delete orphan Stripe customer %s", stripe_customer_id, exc_info=True)


def create_checkout_session(
    *,
    mode: str,
    stripe_customer_id: str,
    success_url: str,
    cancel_url: str,
    currency: str,
    amount_cents: int | None = None,
    description: str | None = None,
    metadata: dict[str, str] | None = None,
) -> CheckoutSession:
    """A Checkout session in `setup` mode (save a card) or `payment` mode (one top-up payment).
    The URLs come from the server (never from the request)."""
    params: dict = {
        "mode": mode,
        "customer": stripe_customer_id,
        "success_url": success_url,
        "cancel_url": cancel_url,
        "payment_method_types": ["card"],
        "metadata": metadata or {},
    }
    if mode == "setup":
        params["setup_intent_data"] = {"metadata": metadata or {}}
    else:
        params["line_items"] = [
            {
                "quantity": 1,
                "price_data": {
                    "currency": currency,
                    "unit_amount": amount_cents,
                    "product_data": {"name": description or "Balance top-up"},
                },
            }
        ]
        params["payment_intent_data"] = {"metadata": metadata or {}}
    created = _call(stripe_client().v1.checkout.sessions.create, params=params)
    return CheckoutSession(created.id, created.url)


def retrieve_checkout_session(checkout_session_id: str) -> dict:
    return _plain(_call(stripe_client().v1.checkout.sessions.retrieve, checkout_session_id))


def retrieve_setup_intent(setup_intent_id: str) -> dict:
    return _plain(_call(stripe_client().v1.setup_intents.retrieve, setup_intent_id))


def payment_method_info(pm: dict) -> PaymentMethodInfo:
    card = pm.get("card") or {}
    return PaymentMethodInfo(
        id=pm["id"],
        customer=pm.get("customer"),
        fingerprint=card.get("fingerprint") or "",
        brand=card.get("brand") or "card",
        last4=card.get("last4") or "????",
        exp_month=int(card.get("exp_month") or 0),
        exp_year=int(card.get("exp_year") or 0),
    )


def retrieve_payment_method(payment_method_id: str) -> PaymentMethodInfo:
    return payment_method_info(_plain(_call(stripe_client().v1.payment_methods.retrieve, payment_method_id)))


def detach_payment_method(payment_method_id: str) -> None:
    """Detach a card from its Stripe customer. Already detached or unknown: nothing to do."""
    try:
        _call(stripe_client().v1.payment_methods.detach, payment_method_id)
    except PaymentRequestInvalid:
        log.info("payment method %s already detached or unknown", payment_method_id)


def refund_payment(*, payment_intent_id: str, amount_cents: int, idempotency_key: str, metadata=None) -> str:
    """Refund part of a payment; returns the Stripe refund id. Idempotent on the key.
    Raises PaymentOutcomeUnknown on a timeout (ask again with the same key)."""
    params = {"payment_intent": payment_intent_id, "amount": amount_cents, "metadata": metadata or {}}
    try:
        refund = stripe_client().v1.refunds.create(params=params, options={"idempotency_key": idempotency_key})
    except stripe.StripeError as exc:
        raise translate_stripe_error(exc) from exc
    return refund.id


def iter_events(created_gte: int | None = None) -> Iterator[dict]:
    """Every event Stripe still has (optionally since `created_gte`), as plain dicts, any order."""
    params: dict = {"limit": 100}
    if created_gte is not None:
        params["created"] = {"gte": created_gte}
    page = _call(stripe_client().v1.events.list, params=params)
    while True:
        for event in page.data:
            yield _plain(event)
        if not page.has_more or not page.data:
            return
        page = _call(
            stripe_client().v1.events.list, params={**params, "starting_after": page.data[-1].id}
        )


def verify_webhook(payload: bytes, signature_header: str | None, secret: str):
    """Check the Stripe-Signature (HMAC, 5-minute tolerance) and return the parsed JSON payload."""
    if not signature_header:
        raise InvalidWebhook("missing Stripe-Signature header")
    try:
        # The SDK's own check (HMAC-SHA256, constant-time compare, timestamp tolerance); the payload is
        # then parsed once into a plain dict (construct_event would also build a StripeObject tree
        # we do not use — most of the verification CPU).
        stripe.WebhookSignature.verify_header(payload, signature_header, secret, tolerance=WEBHOOK_TOLERANCE_SECONDS)
        event = json.loads(payload)
    except (stripe.SignatureVerificationError, ValueError) as exc:
        raise InvalidWebhook(str(exc)) from exc
    except RecursionError:
        raise InvalidWebhook("JSON nested too deep") from None
    # its shape is checked by app.payments.event_shape.parse_event before anything applies it
    return event


def retrieve_charge(charge_id: str) -> dict:
    return _plain(_call(stripe_client().v1.charges.retrieve, charge_id))
