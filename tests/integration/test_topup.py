import json
import threading

import pytest
from sqlalchemy import func, select

from app.models import BillingCustomer, LedgerEntry, SettlementRequest, User
from app.models.stripe_events import Topup
from tests.conftest import get_csrf, login
from tests.stripe_support import (
    cash_entries,
    local_path,
    pay_checkout,
    sign,
    stripe_events_at_emulator,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def customer(factory, client):
    user = factory.customer(email="topup@example.com")
    login(client, user.email)
    return user


def _start_topup(client, amount="25.00"):
    token = get_csrf(client, "/balance")
    return client.post("/balance/topup", data={"amount": amount, "csrf_token": token})


def _paid_checkout(client) -> str:
    """Start a 25.00 top-up and pay it on the hosted page; returns the success URL (not yet visited)."""
    response = _start_topup(client)
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    paid = pay_checkout(response.headers["Location"])
    assert paid.status_code == 303, paid.text[:500]
    return paid.headers["Location"]


def _deliver_all_events(client, events=None):
    for evt in events if events is not None else stripe_events_at_emulator():
        payload = json.dumps(evt).encode()
        response = client.post("/stripe/webhook", data=payload, headers={"Stripe-Signature": sign(payload)},
                               content_type="application/json")
        assert response.status_code == 200


def _cash(session, customer_id):
    session.expire_all()
    return session.get(User, customer_id).cash_balance_cents


def test_success_url_is_built_by_the_server(client, session, quiet_stripe, customer):
    response = _start_topup(client)
    assert response.headers["Location"].startswith(quiet_stripe.api_base + "/checkout/cs_")
    success = pay_checkout(response.headers["Location"]).headers["Location"]
    assert success.startswith("http://127.0.0.1:") and "/stripe/checkout/topup/return?session_id=cs_" in success
    assert session.scalar(select(func.count(BillingCustomer.customer_id))) == 1


def test_redirect_first_then_webhook_credits_once(client, session, quiet_stripe, customer):
    success = _paid_checkout(client)
    page = client.get(local_path(success), follow_redirects=True).get_data(as_text=True)
    assert "$25.00 was added to your balance" in page
    assert _cash(session, customer.id) == 2500

    _deliver_all_events(client)
    entries = cash_entries(session, customer.id)
    assert len(entries) == 1 and entries[0].idempotency_key.startswith("topup:pi_")
    assert _cash(session, customer.id) == 2500
    assert session.get(SettlementRequest, customer.id) is not None


def test_webhook_first_then_redirect_credits_once(client, session, quiet_stripe, customer):
    success = _paid_checkout(client)
    _deliver_all_events(client)
    assert _cash(session, customer.id) == 2500

    page = client.get(local_path(success), follow_redirects=True).get_data(as_text=True)
    assert "$25.00 was added to your balance" in page
    assert len(cash_entries(session, customer.id)) == 1
    assert _cash(session, customer.id) == 2500
    assert session.scalar(select(func.count(Topup.id))) == 1


def test_redirect_and_webhook_racing_credit_once(app, client, session, quiet_stripe, customer):
    success = _paid_checkout(client)
    events = stripe_events_at_emulator()
    redirect_client, webhook_client = app.test_client(), app.test_client()
    with client.session_transaction() as src, redirect_client.session_transaction() as dst:
        dst.update(src)
    barrier = threading.Barrier(2)
    outcomes = []

    def redirect():
        barrier.wait()
        outcomes.append(redirect_client.get(local_path(success)).status_code)

    def webhook():
        barrier.wait()
        _deliver_all_events(webhook_client, events)
        outcomes.append("delivered")

    threads = [threading.Thread(target=redirect), threading.Thread(target=webhook)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, outcomes)) == ["303", "delivered"]
    assert len(cash_entries(session, customer.id)) == 1
    assert _cash(session, customer.id) == 2500


@pytest.mark.parametrize(
    "amount, message",
    [("4.99", "The smallest top-up is $5.00."), ("5000.01", "The largest top-up is $5,000.00."),
     ("ten", "Enter an amount like 25.00."), ("", "Enter an amount.")],
)
def test_out_of_range_amounts_are_refused_and_write_nothing(client, session, quiet_stripe, customer, amount, message):
    response = _start_topup(client, amount)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert session.scalar(select(func.count(BillingCustomer.customer_id))) == 0
    assert session.scalar(select(func.count(LedgerEntry.id))) == 0


def test_a_stripe_error_creating_the_checkout_session_is_a_clear_message_and_writes_no_money(
    client, session, quiet_stripe, customer
):
    quiet_stripe.set_fault("/v1/checkout/sessions", "error")
    response = _start_topup(client)
    assert response.status_code == 409
    assert "Our payment provider is not reachable right now" in response.get_data(as_text=True)
    assert session.scalar(select(func.count(LedgerEntry.id))) == 0
    assert session.scalar(select(func.count(Topup.id))) == 0
    # the retry works
    assert _start_topup(client).status_code == 303


def test_a_stripe_timeout_creating_the_checkout_session_is_a_clear_message(app, client, session, quiet_stripe, customer):
    quiet_stripe.set_fault("/v1/checkout/sessions", "timeout", delay=5)
    app.config["STRIPE_TIMEOUT_SECONDS"] = 1
    try:
        response = _start_topup(client)
    finally:
        app.config.pop("STRIPE_TIMEOUT_SECONDS")
    assert response.status_code == 409
    assert "Our payment provider is not reachable right now" in response.get_data(as_text=True)
    assert session.scalar(select(func.count(LedgerEntry.id))) == 0


def test_a_declined_card_credits_nothing(client, session, quiet_stripe, customer):
    response = _start_topup(client)
    declined = pay_checkout(response.headers["Location"], card="4000000000000002")
    assert declined.status_code == 402 and "Your card was declined." in declined.text
    _deliver_all_events(client)
    assert cash_entries(session, customer.id) == []


def test_a_session_of_another_customer_credits_nobody_on_redirect(client, app, session, quiet_stripe, customer, factory):
    success = _paid_checkout(client)
    thief = factory.customer(email="thief@example.com")
    other = app.test_client()
    with app.app_context():  # a fresh `g`: Flask-WTF caches the CSRF token there
        login(other, thief.email)
        page = other.get(local_path(success), follow_redirects=True).get_data(as_text=True)
    assert "Your payment did not go through" in page
    assert cash_entries(session, thief.id) == [] and cash_entries(session, customer.id) == []


def test_the_balance_page_shows_cash_and_recent_topups(client, session, quiet_stripe, customer):
    client.get(local_path(_paid_checkout(client)))
    html = client.get("/balance").get_data(as_text=True)
    assert 'id="cash-balance">$25.00' in html
    assert html.count('class="topup-row"') == 1
