"""Helpers for the Stripe issue's tests: signed webhook deliveries and Stripe-shaped events."""

import hashlib
import hmac
import json
import secrets
import time

import requests
from sqlalchemy import func, select

from app.models import BillingCustomer, LedgerEntry
from app.models.stripe_events import StripeEvent
from tests.conftest import WEBHOOK_SECRET


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def event(type_: str, obj: dict, *, event_id: str | None = None, created: int | None = None) -> dict:
    return {
        "id": event_id or "evt_" + secrets.token_hex(8),
        "object": "event",
        "type": type_,
        "created": created or int(time.time()),
        "livemode": False,
        "data": {"object": obj},
    }


def topup_intent(pi_id: str, stripe_customer: str, amount: int = 2500) -> dict:
    return {
        "id": pi_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_received": amount,
        "currency": "usd",
        "customer": stripe_customer,
        "status": "succeeded",
        "metadata": {"paydesk_purpose": "topup"},
    }


def topup_checkout(cs_id: str, pi_id: str, stripe_customer: str, amount: int = 2500) -> dict:
    return {
        "id": cs_id,
        "object": "checkout.session",
        "mode": "payment",
        "customer": stripe_customer,
        "payment_intent": pi_id,
        "payment_status": "paid",
        "status": "complete",
        "amount_total": amount,
        "currency": "usd",
        "metadata": {"paydesk_purpose": "topup"},
    }


def link_stripe_customer(session, customer_id: int, stripe_customer: str | None = None) -> str:
    stripe_customer = stripe_customer or "cus_" + secrets.token_hex(7)
    session.add(BillingCustomer(customer_id=customer_id, stripe_customer_id=stripe_customer))
    session.commit()
    return stripe_customer


def post_event(base_url: str, evt: dict, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None,
               http=None) -> requests.Response:
    payload = json.dumps(evt).encode()
    return (http or requests).post(
        f"{base_url}/stripe/webhook",
        data=payload,
        headers={"Stripe-Signature": sign(payload, secret, timestamp), "Content-Type": "application/json"},
        timeout=30,
    )


def cash_entries(session, customer_id: int, kind: str | None = None) -> list[LedgerEntry]:
    session.expire_all()
    query = select(LedgerEntry).where(LedgerEntry.customer_id == customer_id, LedgerEntry.account == "cash")
    if kind:
        query = query.where(LedgerEntry.kind == kind)
    return list(session.scalars(query.order_by(LedgerEntry.id)))


def processed_event_count(session) -> int:
    session.expire_all()
    return session.scalar(select(func.count(StripeEvent.id)))


def pay_checkout(checkout_url: str, card: str = "4242424242424242", exp: str = "12/34", cvc: str = "123"):
    """Submit the emulator's hosted Checkout form like a customer would; returns the raw response
    (303 to the success URL when it went through, the form with an error otherwise)."""
    return requests.post(checkout_url, data={"cardnumber": card, "exp": exp, "cvc": cvc},
                         allow_redirects=False, timeout=30)


def local_path(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


def stripe_events_at_emulator() -> list[dict]:
    from app.payments import gateway

    return sorted(gateway.iter_events(), key=lambda e: e["created"])


def wait_for_events(session, *types, timeout=20.0) -> None:
    """Wait until the emulator's webhooks of these types reached the app (no fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session.expire_all()
        seen = set(session.scalars(select(StripeEvent.type)))
        session.rollback()
        if seen >= set(types):
            return
        time.sleep(0.1)  # polling interval of the bounded wait
    raise AssertionError(f"webhooks {sorted(set(types) - seen)} not received (received: {sorted(seen)})")
