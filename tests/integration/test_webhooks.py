import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select

from app.models import Card, SettlementRequest, User
from app.models.stripe_events import PaymentDispute, StripeEvent, Topup
from tests.stripe_support import (
    cash_entries,
    event,
    link_stripe_customer,
    post_event,
    processed_event_count,
    sign,
    topup_checkout,
    topup_intent,
)

pytestmark = pytest.mark.integration


def _post(client, evt: dict, **sign_args):
    payload = json.dumps(evt).encode()
    return client.post(
        "/stripe/webhook", data=payload, headers={"Stripe-Signature": sign(payload, **sign_args)},
        content_type="application/json",
    )


def _cash(session, customer_id):
    session.expire_all()
    return session.get(User, customer_id).cash_balance_cents


@pytest.fixture
def customer(factory, session):
    user = factory.customer()
    user.stripe_id = link_stripe_customer(session, user.id)
    return user


def test_a_signed_topup_event_credits_the_cash_balance_and_requests_settlement(client, session, customer):
    evt = event("payment_intent.succeeded", topup_intent("pi_one", customer.stripe_id, 2500))
    response = _post(client, evt)
    assert response.status_code == 200
    entries = cash_entries(session, customer.id)
    assert [(e.amount_cents, e.kind, e.idempotency_key) for e in entries] == [(2500, "topup", "topup:pi_one")]
    assert _cash(session, customer.id) == 2500
    assert session.get(SettlementRequest, customer.id) is not None
    recorded = session.get(StripeEvent, evt["id"])
    assert recorded.type == "payment_intent.succeeded" and recorded.customer_id == customer.id

    assert _post(client, evt).get_json() == {"received": True, "duplicate": True}
    assert len(cash_entries(session, customer.id)) == 1


def _tamper(evt):
    payload = json.dumps(evt).encode()
    header = sign(payload)
    return payload.replace(b"2500", b"9900"), {"Stripe-Signature": header}


@pytest.mark.parametrize(
    "case",
    ["wrong secret", "tampered body", "missing header", "timestamp older than tolerance", "garbage header"],
)
def test_a_webhook_with_a_bad_signature_is_refused_and_writes_nothing(client, session, customer, case):
    evt = event("payment_intent.succeeded", topup_intent("pi_bad", customer.stripe_id, 2500))
    payload = json.dumps(evt).encode()
    headers = {
        "wrong secret": {"Stripe-Signature": sign(payload, "whsec_someone_else")},
        "missing header": {},
        "timestamp older than tolerance": {"Stripe-Signature": sign(payload, timestamp=int(time.time()) - 301)},
        "garbage header": {"Stripe-Signature": "nonsense"},
    }.get(case)
    if case == "tampered body":
        payload, headers = _tamper(evt)
    response = client.post("/stripe/webhook", data=payload, headers=headers, content_type="application/json")
    assert response.status_code == 400
    assert processed_event_count(session) == 0
    assert cash_entries(session, customer.id) == []
    assert _cash(session, customer.id) == 0


def test_a_timestamp_within_tolerance_is_accepted(client, session, customer):
    evt = event("payment_intent.succeeded", topup_intent("pi_late", customer.stripe_id, 700))
    assert _post(client, evt, timestamp=int(time.time()) - 240).status_code == 200
    assert _cash(session, customer.id) == 700


def test_the_same_event_delivered_100_times_concurrently_and_out_of_order_is_applied_once(
    live_server, session, customer
):
    now = int(time.time())
    completed = event("checkout.session.completed", topup_checkout("cs_race", "pi_race", customer.stripe_id, 2500),
                      created=now)
    succeeded = event("payment_intent.succeeded", topup_intent("pi_race", customer.stripe_id, 2500), created=now - 2)
    unrelated = event("charge.succeeded", {"id": "ch_x", "object": "charge", "customer": customer.stripe_id},
                      created=now - 5)
    # Out of order: the later checkout event first, the earlier payment-intent event interleaved.
    deliveries = [completed] * 100 + [succeeded] * 20 + [unrelated] * 5
    deliveries = deliveries[::3] + deliveries[1::3] + deliveries[2::3]

    def deliver(evt):
        with requests.Session() as http:
            return post_event(live_server, evt, http=http).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(deliver, deliveries))

    assert statuses == [200] * len(deliveries)
    entries = cash_entries(session, customer.id)
    assert [(e.amount_cents, e.idempotency_key) for e in entries] == [(2500, "topup:pi_race")]
    assert _cash(session, customer.id) == 2500
    assert session.scalar(select(func.count(Topup.id))) == 1
    assert processed_event_count(session) == 3


def test_an_unknown_event_type_is_recorded_and_ignored(client, session, customer):
    evt = event("invoice.created", {"id": "in_1", "object": "invoice", "customer": customer.stripe_id})
    assert _post(client, evt).status_code == 200
    assert session.get(StripeEvent, evt["id"]).customer_id == customer.id
    assert cash_entries(session, customer.id) == []


def test_an_event_for_a_stranger_is_recorded_but_credits_nobody(client, session, customer):
    evt = event("payment_intent.succeeded", topup_intent("pi_stranger", "cus_not_ours", 2500))
    assert _post(client, evt).status_code == 200
    assert session.get(StripeEvent, evt["id"]) is not None
    assert session.scalar(select(func.count(Topup.id))) == 0


def test_a_payment_intent_that_is_not_a_topup_never_credits_cash(client, session, customer):
    intent = topup_intent("pi_invoice", customer.stripe_id, 4000) | {"metadata": {"invoice_id": "7"}}
    assert _post(client, event("payment_intent.succeeded", intent)).status_code == 200
    assert cash_entries(session, customer.id) == []


def test_a_dispute_flags_the_customer_and_the_payment_until_it_is_won(client, session, customer):
    _post(client, event("payment_intent.succeeded", topup_intent("pi_d", customer.stripe_id, 2500)))
    dispute = {"id": "dp_1", "object": "dispute", "charge": "ch_d", "payment_intent": "pi_d", "amount": 2500,
               "status": "needs_response", "reason": "fraudulent"}
    assert _post(client, event("charge.dispute.created", dispute)).status_code == 200
    session.expire_all()
    assert session.get(User, customer.id).disputed is True
    assert session.scalar(select(Topup.disputed_at).where(Topup.payment_intent_id == "pi_d")) is not None
    assert session.get(PaymentDispute, "dp_1").customer_id == customer.id

    assert _post(client, event("charge.dispute.closed", dispute | {"status": "won"})).status_code == 200
    session.expire_all()
    assert session.get(User, customer.id).disputed is False
    assert session.get(PaymentDispute, "dp_1").status == "won"


def test_a_lost_dispute_delivered_before_its_creation_keeps_the_customer_flagged(client, session, customer):
    _post(client, event("payment_intent.succeeded", topup_intent("pi_l", customer.stripe_id, 2500)))
    dispute = {"id": "dp_2", "object": "dispute", "charge": "ch_l", "payment_intent": "pi_l", "amount": 2500,
               "reason": "fraudulent"}
    _post(client, event("charge.dispute.closed", dispute | {"status": "lost"}))
    _post(client, event("charge.dispute.created", dispute | {"status": "needs_response"}))
    session.expire_all()
    assert session.get(PaymentDispute, "dp_2").status == "lost"
    assert session.get(User, customer.id).disputed is True


def _card(session, customer_id, pm, fingerprint, default=False, exp=(12, 2099)):
    card = Card(customer_id=customer_id, stripe_payment_method_id=pm, fingerprint=fingerprint, brand="visa",
                last4="4242", exp_month=exp[0], exp_year=exp[1], is_default=default)
    session.add(card)
    session.commit()
    return card


def test_a_detached_payment_method_removes_the_card_and_promotes_another_default(client, session, customer):
    first = _card(session, customer.id, "pm_first", "fp1", default=True)
    second = _card(session, customer.id, "pm_second", "fp2")
    pm = {"id": "pm_first", "object": "payment_method", "customer": None, "card": {"fingerprint": "fp1"}}
    assert _post(client, event("payment_method.detached", pm)).status_code == 200
    session.expire_all()
    assert session.get(Card, first.id).removed_at is not None
    assert session.get(Card, second.id).is_default is True


def test_an_updated_payment_method_changes_the_card_expiry(client, session, customer):
    card = _card(session, customer.id, "pm_upd", "fp3", default=True, exp=(1, 2020))
    pm = {"id": "pm_upd", "object": "payment_method", "customer": customer.stripe_id,
          "card": {"brand": "visa", "last4": "4242", "exp_month": 3, "exp_year": 2031, "fingerprint": "fp3"}}
    assert _post(client, event("payment_method.updated", pm)).status_code == 200
    session.expire_all()
    assert (session.get(Card, card.id).exp_month, session.get(Card, card.id).exp_year) == (3, 2031)


def test_a_refund_confirmed_by_stripe_settles_the_pending_refund_part(client, session, customer):
    from app.models.stripe_events import CashRefund

    _post(client, event("payment_intent.succeeded", topup_intent("pi_r", customer.stripe_id, 2500)))
    topup = session.scalar(select(Topup))
    part = CashRefund(customer_id=customer.id, topup_id=topup.id, payment_intent_id="pi_r", amount_cents=500,
                      request_key="rk", idempotency_key="cash-refund:rk:1", reason="test", status="pending")
    session.add(part)
    session.commit()
    refund = {"id": "re_1", "object": "refund", "amount": 500, "status": "succeeded", "payment_intent": "pi_r",
              "metadata": {"paydesk_cash_refund_id": str(part.id)}}
    charge = {"id": "ch_r", "object": "charge", "customer": customer.stripe_id, "payment_intent": "pi_r",
              "amount_refunded": 500, "refunds": {"object": "list", "data": [refund]}}
    assert _post(client, event("charge.refunded", charge)).status_code == 200
    assert _post(client, event("refund.updated", refund)).status_code == 200
    session.expire_all()
    part = session.get(CashRefund, part.id)
    assert (part.status, part.stripe_refund_id) == ("succeeded", "re_1")
    assert _cash(session, customer.id) == 2500  # the ledger moved when the refund was requested, not here


def test_a_top_up_that_would_take_the_balance_past_its_limit_is_refused_and_writes_nothing(client, session, customer):
    from app.billing.ledger import MAX_BALANCE_CENTS

    user = session.get(User, customer.id)
    user.cash_balance_cents = MAX_BALANCE_CENTS - 100
    session.commit()
    evt = event("payment_intent.succeeded", topup_intent("pi_past_limit", customer.stripe_id, 2500))
    response = _post(client, evt)
    assert response.status_code == 422
    assert "limit" in response.get_json()["error"]
    assert _cash(session, customer.id) == MAX_BALANCE_CENTS - 100
    assert cash_entries(session, customer.id) == []
    assert session.get(StripeEvent, evt["id"]) is None
    assert session.scalar(select(func.count()).select_from(Topup)) == 0
