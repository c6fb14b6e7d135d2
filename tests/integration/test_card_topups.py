"""Top-ups with a saved card: an off-session PaymentIntent at the Stripe emulator, recorded before
Stripe is called, credited once (redirect, webhook or reconciliation), 3-D Secure → Checkout."""

import json
import re

import pytest
from sqlalchemy import select

from app.models import BillingCustomer, User
from app.models.base import utcnow
from app.models.stripe_events import CardTopup, Topup
from jobs.stripe_events import reconcile_stripe_events
from jobs.topups import redrive_card_topups
from tests.conftest import csrf_token_from, login
from tests.money_support import add_card, assert_money_invariants, payment_intents
from tests.stripe_support import cash_entries, sign, stripe_events_at_emulator

pytestmark = pytest.mark.integration
DECLINES_OFF_SESSION = "4000000000000341"
ASKS_FOR_3DS = "4000002500003155"


@pytest.fixture
def customer(factory, client):
    user = factory.customer(email="card-topup@example.com")
    login(client, user.email)
    return user


def _form(client) -> dict:
    html = client.get("/balance").get_data(as_text=True)
    token = re.search(r'name="request_token"[^>]*value="([^"]+)"', html) or re.search(
        r'value="([^"]+)"[^>]*name="request_token"', html)
    return {"csrf_token": csrf_token_from(html), "request_token": token.group(1)}


def _top_up(client, card_id, amount="20.00", form=None, htmx=False):
    data = {**(form or _form(client)), "amount": amount, "pay_with": str(card_id)}
    headers = {"HX-Request": "true"} if htmx else {}
    return client.post("/balance/topup", data=data, headers=headers)


def _cash(session, customer_id):
    session.expire_all()
    return session.get(User, customer_id).cash_balance_cents


def _succeeded(session, customer_id):
    stripe_id = session.get(BillingCustomer, customer_id).stripe_customer_id
    return [pi for pi in payment_intents(stripe_id) if pi.status == "succeeded"]


def _deliver(client, events):
    for evt in events:
        payload = json.dumps(evt).encode()
        response = client.post("/stripe/webhook", data=payload, headers={"Stripe-Signature": sign(payload)},
                               content_type="application/json")
        assert response.status_code == 200


def test_the_balance_page_offers_saved_cards_default_first_and_a_new_card(client, session, quiet_stripe, customer):
    add_card(session, customer.id, "5555555555554444")
    add_card(session, customer.id, default=True)
    html = client.get("/balance").get_data(as_text=True)
    labels = re.findall(r'class="pay-with-option">\s*<input[^>]*> ([^<]+)', html)
    assert [label[-4:] for label in labels] == ["4242", "4444", "ard "] and labels[2] == "A new card "
    assert re.search(r'<input checked[^>]*value="\d+"|<input[^>]*checked[^>]*value="\d+"', html)


def test_a_saved_card_top_up_charges_off_session_and_credits_once_whatever_arrives_after(
    client, session, quiet_stripe, customer
):
    card = add_card(session, customer.id, default=True)
    response = _top_up(client, card.id)
    assert response.status_code == 303, re.findall(r"field-error[^<]*<", response.get_data(as_text=True))
    assert response.headers["Location"].endswith("/balance")
    assert "Visa ending 4242 was charged $20.00" in client.get("/balance").get_data(as_text=True)

    [intent] = _succeeded(session, customer.id)
    assert (intent.amount, intent.payment_method, intent.metadata["paydesk_purpose"]) == (
        2000, card.stripe_payment_method_id, "topup")
    attempt = session.scalar(select(CardTopup))
    assert (attempt.status, attempt.payment_intent_id, attempt.amount_cents) == ("succeeded", intent.id, 2000)
    assert attempt.idempotency_key.startswith(f"paydesk-topup-{customer.id}-")
    assert session.scalar(select(Topup)).payment_intent_id == intent.id

    # the payment_intent.succeeded webhook and the reconciliation find the credit already made
    _deliver(client, stripe_events_at_emulator())
    reconcile_stripe_events()
    assert [e.amount_cents for e in cash_entries(session, customer.id)] == [2000]
    assert _cash(session, customer.id) == 2000
    assert_money_invariants(session, customer.id)


def test_the_webhook_may_credit_first_and_the_request_then_finds_it(client, session, quiet_stripe, customer):
    """Stripe answered after a timeout: the event credits it; the re-drive replays the same key."""
    card = add_card(session, customer.id, default=True)
    quiet_stripe.set_fault("/v1/payment_intents", "error_after_forward")
    response = _top_up(client, card.id)
    assert response.status_code == 202
    assert "You will not be charged twice" in response.get_data(as_text=True)
    assert session.scalar(select(CardTopup)).status == "unknown"
    assert _cash(session, customer.id) == 0

    _deliver(client, [e for e in stripe_events_at_emulator() if e["type"] == "payment_intent.succeeded"])
    assert _cash(session, customer.id) == 2000

    session.execute(CardTopup.__table__.update().values(updated_at=utcnow() - _minutes(5)))
    session.commit()
    assert redrive_card_topups() == 1
    session.expire_all()
    assert session.scalar(select(CardTopup)).status == "succeeded"
    assert len(_succeeded(session, customer.id)) == 1
    assert [e.amount_cents for e in cash_entries(session, customer.id)] == [2000]
    assert_money_invariants(session, customer.id)


def test_submitting_again_after_an_unknown_outcome_repeats_the_same_request(client, session, quiet_stripe, customer):
    card = add_card(session, customer.id, default=True)
    quiet_stripe.set_fault("/v1/payment_intents", "error_after_forward")  # charged, but the answer is lost
    form = _form(client)
    first = _top_up(client, card.id, form=form, htmx=True)
    assert first.status_code == 202
    kept = re.search(r'name="request_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="request_token"',
                     first.get_data(as_text=True))
    assert form["request_token"] in kept.groups()  # the re-rendered form repeats the same request
    again = _top_up(client, card.id, form=form, htmx=True)
    assert again.status_code == 204 and again.headers["HX-Redirect"].endswith("/balance")
    assert len(_succeeded(session, customer.id)) == 1
    assert [e.amount_cents for e in cash_entries(session, customer.id)] == [2000]


def test_an_unknown_outcome_is_retried_with_the_same_key_and_never_charges_twice(
    client, session, quiet_stripe, customer
):
    card = add_card(session, customer.id, default=True)
    quiet_stripe.set_fault("/v1/payment_intents", "error")  # failed before Stripe: nothing charged yet
    assert _top_up(client, card.id).status_code == 202
    assert _succeeded(session, customer.id) == []
    assert redrive_card_topups() == 0  # too young: the request that made it may still be running

    session.execute(CardTopup.__table__.update().values(updated_at=utcnow() - _minutes(5)))
    session.commit()
    assert redrive_card_topups() == 1
    assert redrive_card_topups() == 0
    assert len(_succeeded(session, customer.id)) == 1
    assert _cash(session, customer.id) == 2000
    assert_money_invariants(session, customer.id)


def test_the_same_form_submitted_twice_charges_once(client, session, quiet_stripe, customer):
    card = add_card(session, customer.id, default=True)
    form = _form(client)
    assert _top_up(client, card.id, form=form).status_code == 303
    assert _top_up(client, card.id, form=form).status_code == 303
    assert len(session.scalars(select(CardTopup)).all()) == 1
    assert len(_succeeded(session, customer.id)) == 1
    assert _cash(session, customer.id) == 2000


def test_a_declined_saved_card_says_which_card_and_why_in_place_and_credits_nothing(
    client, session, quiet_stripe, customer
):
    card = add_card(session, customer.id, DECLINES_OFF_SESSION, default=True)
    response = _top_up(client, card.id, htmx=True)
    assert response.status_code == 402
    body = response.get_data(as_text=True)
    assert 'id="topup-form"' in body and "<html" not in body  # the form fragment, swapped in place
    assert "Visa ending 0341 was declined: the bank did not approve it. Nothing was charged." in body
    assert session.scalar(select(CardTopup)).status == "declined"
    assert _cash(session, customer.id) == 0 and cash_entries(session, customer.id) == []


def test_a_card_asking_for_3d_secure_falls_back_to_checkout_for_the_same_amount(
    client, session, quiet_stripe, customer
):
    card = add_card(session, customer.id, ASKS_FOR_3DS, default=True)
    response = _top_up(client, card.id, amount="20.00", htmx=True)
    assert response.status_code == 204
    checkout_url = response.headers["HX-Redirect"]
    assert checkout_url.startswith(quiet_stripe.api_base + "/checkout/cs_")
    assert session.scalar(select(CardTopup)).status == "requires_action"
    assert _succeeded(session, customer.id) == []
    assert "20.00" in __import__("requests").get(checkout_url, timeout=10).text
    assert _cash(session, customer.id) == 0


def test_a_card_of_another_customer_or_a_removed_card_is_refused(client, session, factory, quiet_stripe, customer):
    other = factory.customer(email="someone-else@example.com")
    theirs = add_card(session, other.id, default=True)
    response = _top_up(client, theirs.id)
    assert response.status_code == 400
    assert "Choose one of your saved cards" in response.get_data(as_text=True)
    for bad in ("abc", "99999999999999999999", "-1"):
        assert _top_up(client, bad).status_code == 400
    assert session.scalars(select(CardTopup)).all() == []


def test_a_bad_amount_or_token_is_explained_and_nothing_is_charged(client, session, quiet_stripe, customer):
    card = add_card(session, customer.id, default=True)
    response = _top_up(client, card.id, amount="12abc")
    assert response.status_code == 400 and "Enter an amount like 25.00." in response.get_data(as_text=True)
    response = _top_up(client, card.id, amount="2.00")
    assert response.status_code == 400 and "The smallest top-up is $5.00." in response.get_data(as_text=True)
    response = _top_up(client, card.id, form={**_form(client), "request_token": "<script>"})
    assert response.status_code == 400 and "This form has expired" in response.get_data(as_text=True)
    assert session.scalars(select(CardTopup)).all() == []
    assert _succeeded(session, customer.id) == []


def _minutes(n):
    from datetime import timedelta

    return timedelta(minutes=n)
