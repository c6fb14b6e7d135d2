import threading

import pytest
import stripe as stripe_sdk
from sqlalchemy import func, select

from app.billing.cards import LastCardNeeded, remove_card
from app.billing.stripe_customers import ensure_stripe_customer
from app.extensions import db
from app.models import BillingCustomer, Card, SettlementRequest
from tests.conftest import get_csrf, login
from tests.integration.test_topup import _deliver_all_events
from tests.stripe_support import local_path, pay_checkout

pytestmark = pytest.mark.integration


@pytest.fixture
def customer(factory, client):
    user = factory.customer(email="cardholder@example.com")
    login(client, user.email)
    return user


def _sdk(emulator):
    return stripe_sdk.StripeClient("sk_test_paydesk", base_addresses={"api": emulator.api_base})


def _saved_card_checkout(client, number="4242424242424242", exp="12/34") -> str:
    token = get_csrf(client, "/cards")
    response = client.post("/cards/add", data={"csrf_token": token})
    assert response.status_code == 303
    paid = pay_checkout(response.headers["Location"], card=number, exp=exp)
    assert paid.status_code == 303, paid.text[:300]
    return paid.headers["Location"]


def _cards(session, customer_id):
    session.expire_all()
    return list(session.scalars(select(Card).where(Card.customer_id == customer_id).order_by(Card.id)))


def test_a_card_added_through_checkout_is_recorded_from_stripe_data_and_becomes_default(
    client, session, quiet_stripe, customer
):
    page = client.get(local_path(_saved_card_checkout(client)), follow_redirects=True).get_data(as_text=True)
    assert "Card saved: Visa ending in 4242." in page
    [card] = _cards(session, customer.id)
    assert (card.brand, card.last4, card.exp_month, card.exp_year, card.is_default) == ("visa", "4242", 12, 2034, True)
    assert card.stripe_payment_method_id.startswith("pm_") and card.fingerprint
    assert session.get(SettlementRequest, customer.id) is not None
    pm = _sdk(quiet_stripe).v1.payment_methods.retrieve(card.stripe_payment_method_id)
    stored = session.scalar(select(BillingCustomer.stripe_customer_id).where(BillingCustomer.customer_id == customer.id))
    assert pm.customer == stored


def test_webhook_and_redirect_record_the_card_once(client, session, quiet_stripe, customer):
    success = _saved_card_checkout(client)
    _deliver_all_events(client)
    _deliver_all_events(client)
    assert len(_cards(session, customer.id)) == 1
    client.get(local_path(success))
    assert len(_cards(session, customer.id)) == 1


def test_the_same_card_twice_is_detached_and_the_customer_told(client, session, quiet_stripe, customer):
    client.get(local_path(_saved_card_checkout(client)))
    second = _saved_card_checkout(client)
    page = client.get(local_path(second), follow_redirects=True).get_data(as_text=True)
    assert "This card is already on your account." in page
    cards = _cards(session, customer.id)
    assert len(cards) == 1
    pms = _sdk(quiet_stripe).v1.payment_methods.list(
        params={"customer": session.scalar(select(BillingCustomer.stripe_customer_id)), "type": "card"}
    )
    assert [pm.id for pm in pms.data] == [cards[0].stripe_payment_method_id]


def test_a_second_card_is_not_default_and_removing_the_default_promotes_it(client, session, quiet_stripe, customer):
    client.get(local_path(_saved_card_checkout(client)))
    client.get(local_path(_saved_card_checkout(client, number="5555555555554444")))
    first, second = _cards(session, customer.id)
    assert first.is_default and not second.is_default and second.last4 == "4444"

    token = get_csrf(client, "/cards")
    response = client.post(f"/cards/{first.id}/remove", headers={"HX-Request": "true", "X-CSRFToken": token})
    assert response.status_code == 200
    first, second = _cards(session, customer.id)
    assert first.removed_at is not None and second.is_default
    assert _sdk(quiet_stripe).v1.payment_methods.retrieve(first.stripe_payment_method_id).customer is None


def test_a_stripe_failure_while_removing_keeps_the_card(app, client, session, quiet_stripe, customer):
    client.get(local_path(_saved_card_checkout(client)))
    [card] = _cards(session, customer.id)
    quiet_stripe.set_fault("/v1/payment_methods/", "error")
    token = get_csrf(client, "/cards")
    response = client.post(f"/cards/{card.id}/remove", headers={"HX-Request": "true", "X-CSRFToken": token})
    assert response.status_code == 409
    assert "not reachable" in response.get_data(as_text=True)
    assert _cards(session, customer.id)[0].removed_at is None


def test_two_concurrent_first_calls_store_one_stripe_customer(app, session, quiet_stripe, customer):
    results, errors = [], []
    barrier = threading.Barrier(6)

    def first_call():
        try:
            with app.app_context():
                s = db.new_session()
                barrier.wait()
                results.append(ensure_stripe_customer(s, customer.id))
                s.close()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=first_call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert session.scalar(select(func.count(BillingCustomer.customer_id))) == 1
    stored = session.scalar(select(BillingCustomer.stripe_customer_id))
    assert set(results) == {stored}
    assert _sdk(quiet_stripe).v1.customers.retrieve(stored).email == customer.email


def test_removing_the_last_card_is_allowed_when_vouchers_cover_deployments(session, quiet_stripe, customer):
    from tests.integration.test_cards import _card, _running_deployment

    card = _card(session, customer.id, "pm_gone", default=True)
    _running_deployment(session, customer.id, hourly="0.010000")
    with pytest.raises(LastCardNeeded):
        remove_card(session, customer.id, card.id)
    from app.billing.ledger import post_entry

    post_entry(session, customer_id=customer.id, account="voucher", amount_cents=100_000, kind="voucher",
               idempotency_key="test-voucher")
    session.commit()
    remove_card(session, customer.id, card.id)
    assert _cards(session, customer.id)[0].removed_at is not None
