"""The Stripe gateway: the only module that talks to Stripe (official `stripe` SDK).

`STRIPE_API_BASE` points it at the local emulator in development and tests; nothing here knows
that. Stripe errors become the typed domain errors below, each with a message fit for a customer.
Every call that moves money takes an idempotency key from the caller, so a retried job repeats
the original request instead of charging again. The SDK's own retries are off: retrying is the
caller's decision, always with the same key.
"""

from dataclasses import dataclass

import stripe
from flask import current_app


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
        return CardDeclined("Your card was declined.", code=exc.code or "card_declined", payment_intent_id=pi_id)
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
