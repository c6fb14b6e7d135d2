"""A payment_intent.succeeded top-up is applied by one statement on PostgreSQL (app.billing.topups):
the same rows as the general path, one round trip, and the general path whenever it refuses."""

import json

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select

from app.models import LedgerEntry, SettlementRequest, User
from app.models.notification import Notification
from app.models.stripe_events import StripeEvent, Topup
from jobs.queue import QUEUE_NAME, SETTLEMENT_QUEUE, get_queue
from tests.stripe_support import cash_entries, event, link_stripe_customer, sign, topup_checkout, topup_intent

pytestmark = pytest.mark.integration


def _post(client, evt: dict):
    payload = json.dumps(evt).encode()
    return client.post("/stripe/webhook", data=payload, headers={"Stripe-Signature": sign(payload)},
                       content_type="application/json")


@pytest.fixture
def customer(factory, session):
    user = factory.customer()
    user.stripe_id = link_stripe_customer(session, user.id)
    return user


def _statements_of(app):
    seen = []

    def record(_conn, _cursor, statement, *_args):
        seen.append(statement)

    sa_event.listen(app.extensions["paydesk_engine"], "before_cursor_execute", record)
    return seen, lambda: sa_event.remove(app.extensions["paydesk_engine"], "before_cursor_execute", record)


def test_a_new_topup_delivery_is_one_statement_writing_every_row_and_enqueueing_its_jobs(app, client, session,
                                                                                         customer):
    get_queue(QUEUE_NAME).empty()
    get_queue(SETTLEMENT_QUEUE).empty()
    evt = event("payment_intent.succeeded", topup_intent("pi_single", customer.stripe_id, 1800))
    seen, stop = _statements_of(app)
    try:
        response = _post(client, evt)
    finally:
        stop()
    assert response.get_json() == {"received": True, "duplicate": False}
    assert len(seen) == 1 and seen[0].startswith("WITH claim AS")

    session.expire_all()
    assert session.get(User, customer.id).cash_balance_cents == 1800
    entry = session.scalars(select(LedgerEntry).where(LedgerEntry.customer_id == customer.id)).one()
    assert (entry.kind, entry.idempotency_key, entry.reference, entry.note) == (
        "topup", "topup:pi_single", "pi_single", "Card top-up")
    topup = session.scalars(select(Topup)).one()
    assert (topup.customer_id, topup.amount_cents, topup.refunded_cents, topup.ledger_entry_id) == (
        customer.id, 1800, 0, entry.id)
    recorded = session.get(StripeEvent, evt["id"])
    assert (recorded.customer_id, recorded.outcome, recorded.source) == (customer.id, "applied", "webhook")
    request = session.get(SettlementRequest, customer.id)
    assert request.generation == 1 and request.enqueued_at is not None
    receipt = session.scalars(select(Notification).where(Notification.customer_id == customer.id)).one()
    assert (receipt.kind, receipt.key, receipt.status, receipt.template) == (
        "topup_receipt", "topup-receipt:pi_single", "pending", "topup_receipt")
    assert receipt.context["amount_cents"] == 1800 and receipt.message_id.startswith("<n-")
    assert [job.args for job in get_queue(SETTLEMENT_QUEUE).get_jobs()] == [(customer.id,)]
    assert [job.args for job in get_queue(QUEUE_NAME).get_jobs()] == [(receipt.id,)]

    # a second top-up moments later: the settlement enqueue coalesces, the receipt is sent
    assert _post(client, event("payment_intent.succeeded", topup_intent("pi_next", customer.stripe_id, 200))
                 ).status_code == 200
    session.expire_all()
    assert session.get(SettlementRequest, customer.id).generation == 2
    assert len(get_queue(SETTLEMENT_QUEUE).get_jobs()) == 1
    assert len(get_queue(QUEUE_NAME).get_jobs()) == 2
    assert session.get(User, customer.id).cash_balance_cents == 2000


def test_a_customer_without_receipts_gets_a_skipped_receipt_and_no_send_job(client, session, customer):
    customer.email_receipts = False
    session.commit()
    get_queue(QUEUE_NAME).empty()
    assert _post(client, event("payment_intent.succeeded", topup_intent("pi_quiet", customer.stripe_id))
                 ).status_code == 200
    receipt = session.scalars(select(Notification).where(Notification.customer_id == customer.id)).one()
    assert receipt.status == "skipped" and receipt.skipped_at is not None
    assert get_queue(QUEUE_NAME).get_jobs() == []
    assert [e.amount_cents for e in cash_entries(session, customer.id)] == [2500]


def test_a_payment_already_credited_by_its_checkout_event_is_applied_the_general_way_once(client, session,
                                                                                         customer):
    completed = event("checkout.session.completed", topup_checkout("cs_first", "pi_first", customer.stripe_id))
    succeeded = event("payment_intent.succeeded", topup_intent("pi_first", customer.stripe_id))
    assert _post(client, completed).status_code == 200
    # the one statement meets the used ledger key, writes nothing; the general path records the event
    assert _post(client, succeeded).get_json() == {"received": True, "duplicate": False}
    assert _post(client, succeeded).get_json() == {"received": True, "duplicate": True}
    session.expire_all()
    assert [e.idempotency_key for e in cash_entries(session, customer.id)] == ["topup:pi_first"]
    assert session.get(User, customer.id).cash_balance_cents == 2500
    assert session.scalar(select(func.count(Topup.id))) == 1
    assert session.scalar(select(func.count(Notification.id))) == 1
    assert session.get(StripeEvent, succeeded["id"]).outcome == "applied"
    assert session.get(SettlementRequest, customer.id).generation == 1


def test_a_topup_for_an_unknown_stripe_customer_is_recorded_and_credits_nobody(client, session, customer):
    evt = event("payment_intent.succeeded", topup_intent("pi_nobody", "cus_nobody"))
    assert _post(client, evt).get_json() == {"received": True, "duplicate": False}
    recorded = session.get(StripeEvent, evt["id"])
    assert recorded.customer_id is None and recorded.outcome == "applied"
    assert session.scalar(select(func.count(LedgerEntry.id))) == 0
    assert session.scalar(select(func.count(Notification.id))) == 0
    assert session.scalar(select(func.count(SettlementRequest.customer_id))) == 0
