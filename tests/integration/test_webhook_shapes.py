"""Signed Stripe events of the wrong shape (SPEC §11): answered 400 and recorded as ignored, never a 500,
never applied; their shape is checked in one place (app.payments.event_shape) for the webhook and the
reconciliation job alike."""

import copy
import json

import pytest
import requests
from sqlalchemy import func, select

from app.models import User
from app.models.stripe_events import StripeEvent
from tests.stripe_support import event, link_stripe_customer, post_event, sign, topup_checkout, topup_intent

pytestmark = pytest.mark.integration


@pytest.fixture
def customer(factory, session):
    user = factory.customer()
    user.stripe_id = link_stripe_customer(session, user.id)
    return user


def _topup(customer, event_id="evt_shape"):
    return event("payment_intent.succeeded", topup_intent("pi_shape", customer.stripe_id, 2500), event_id=event_id)


def _set(path, value):
    def change(evt):
        *parents, last = path
        node = evt
        for key in parents:
            node = node[key]
        node[last] = value
        return evt

    return change


def _drop(*path):
    def change(evt):
        *parents, last = path
        node = evt
        for key in parents:
            node = node[key]
        del node[last]
        return evt

    return change


MALFORMED = {
    "dict id": _set(["id"], {"evil": "id"}),
    "missing id": _drop("id"),
    "missing type": _drop("type"),
    "missing data": _drop("data"),
    "object is a list": _set(["data", "object"], [1, 2]),
    "object missing": _drop("data", "object"),
    "created is text": _set(["created"], "yesterday"),
    "amount is text": _set(["data", "object", "amount_received"], "2500"),
    "metadata is a list": _set(["data", "object", "metadata"], ["paydesk_topup"]),
    "customer is a number": _set(["data", "object", "customer"], 42),
    "customer object without id": _set(["data", "object", "customer"], {"object": "customer"}),
    "object id is a dict": _set(["data", "object", "id"], {"id": "pi_1"}),
    "object without id": _drop("data", "object", "id"),
    "type with a NUL": _set(["type"], "payment_intent.succeeded\x00"),
    "huge amount": _set(["data", "object", "amount_received"], 10**30),
}


def _cash(session, customer):
    session.expire_all()
    return session.get(User, customer.id).cash_balance_cents


def _rows(session):
    session.expire_all()
    return session.execute(select(StripeEvent.id, StripeEvent.outcome, StripeEvent.note)).all()


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_signed_event_of_the_wrong_shape_is_a_400_recorded_as_ignored_and_never_applied(
    live_server, session, customer, case
):
    evt = MALFORMED[case](copy.deepcopy(_topup(customer)))
    for _ in range(2):  # Stripe retries: same answer, still one row
        response = post_event(live_server, evt)
        assert response.status_code == 400, response.text
        assert response.json()["ignored"] is True and response.json()["error"].startswith("malformed event: ")
    [(row_id, outcome, note)] = _rows(session)
    assert outcome == "ignored" and note
    assert row_id == "evt_shape" or row_id.startswith("malformed_")
    assert _cash(session, customer) == 0


def test_wrong_nesting_inside_a_checkout_session_or_refund_list_is_refused(live_server, session, customer):
    checkout = topup_checkout("cs_shape", "pi_shape", customer.stripe_id)
    checkout["payment_intent"] = {"object": "payment_intent"}  # expanded, but without its id
    refunded = event("charge.refunded", {"id": "ch_1", "refunds": {"data": {"id": "re_1"}}})
    dispute = event("charge.dispute.created", {"id": "dp_1", "amount": -5, "charge": ["ch_1"]})
    for evt in (event("checkout.session.completed", checkout), refunded, dispute):
        assert post_event(live_server, evt).status_code == 400
    assert [outcome for _, outcome, _ in _rows(session)] == ["ignored"] * 3
    assert _cash(session, customer) == 0


def test_a_well_formed_event_is_still_applied_once_and_an_unknown_type_is_recorded_as_ignored(
    live_server, session, customer
):
    evt = _topup(customer)
    assert post_event(live_server, evt).json() == {"received": True, "duplicate": False}
    assert post_event(live_server, evt).json() == {"received": True, "duplicate": True}
    other = event("customer.subscription.created", {"id": "sub_1", "customer": customer.stripe_id})
    assert post_event(live_server, other).status_code == 200
    assert sorted((row_id, outcome) for row_id, outcome, _ in _rows(session)) == sorted(
        [("evt_shape", "applied"), (other["id"], "ignored")])
    assert _cash(session, customer) == 2500


def test_a_signed_payload_that_is_not_an_object_or_nested_too_deep_is_refused(live_server, session, customer):
    assert post_event(live_server, [_topup(customer)]).status_code == 400  # recorded: a list is no event
    deep = b"[" * 50_000 + b"]" * 50_000
    response = requests.post(f"{live_server}/stripe/webhook", data=deep, timeout=30,
                             headers={"Stripe-Signature": sign(deep), "Content-Type": "application/json"})
    assert response.status_code == 400
    assert len(_rows(session)) == 1 and _rows(session)[0].id.startswith("malformed_")


def test_a_webhook_body_over_one_mib_is_refused_with_413(live_server, session, customer):
    evt = _topup(customer)
    evt["data"]["object"]["description"] = "x" * (2 * 1024 * 1024)
    payload = json.dumps(evt).encode()
    response = requests.post(f"{live_server}/stripe/webhook", data=payload, timeout=30,
                             headers={"Stripe-Signature": sign(payload), "Content-Type": "application/json"})
    assert response.status_code == 413
    assert _rows(session) == [] and _cash(session, customer) == 0


def test_the_events_job_records_a_malformed_event_as_ignored_and_applies_the_rest(
    app, session, customer, monkeypatch
):
    from jobs.stripe_events import reconcile_stripe_events

    good = _topup(customer, event_id="evt_good")
    bad = MALFORMED["dict id"](copy.deepcopy(_topup(customer)))
    worse = MALFORMED["amount is text"](copy.deepcopy(_topup(customer, event_id="evt_bad_amount")))
    monkeypatch.setattr("app.payments.gateway.iter_events", lambda created_gte=None: iter([bad, worse, good]))
    assert reconcile_stripe_events() == 1
    assert reconcile_stripe_events() == 0
    rows = {row_id: outcome for row_id, outcome, _ in _rows(session)}
    assert rows.pop("evt_good") == "applied" and rows.pop("evt_bad_amount") == "ignored"
    [(malformed_id, outcome)] = rows.items()
    assert malformed_id.startswith("malformed_") and outcome == "ignored"
    assert _cash(session, customer) == 2500
    assert session.scalar(select(func.count(StripeEvent.id))) == 3
