"""Settlement with cards: off-session PaymentIntents at the Stripe emulator, declines, faults,
concurrency and a worker killed mid-charge."""

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.billing.settlement import settle_customer
from app.models import BillingCustomer, ChargeAttempt, Invoice, InvoicePayment, SettlementRequest
from app.models.base import utcnow
from tests.money_support import add_card, assert_money_invariants, credit, make_invoice, payment_intents

pytestmark = pytest.mark.integration
DECLINES_OFF_SESSION = "4000000000000341"


def payments_of(session, invoice_id):
    session.expire_all()
    return sorted(
        (p.source, p.amount_cents)
        for p in session.scalars(select(InvoicePayment).where(InvoicePayment.invoice_id == invoice_id))
    )


def succeeded_intents(session, customer_id):
    stripe_id = session.get(BillingCustomer, customer_id).stripe_customer_id
    return [pi for pi in payment_intents(stripe_id) if pi.status == "succeeded"]


def test_worked_example_voucher_then_cash_then_default_card(session, factory, stripe):
    customer = factory.customer()
    card = add_card(session, customer.id, default=True)
    start = utcnow() - timedelta(days=3)
    ten = make_invoice(session, customer.id, 1000, now=start)
    three = make_invoice(session, customer.id, 300, now=start + timedelta(hours=1))
    eight = make_invoice(session, customer.id, 800, now=start + timedelta(hours=2))
    credit(session, customer.id, "voucher", 500)
    credit(session, customer.id, "cash", 1200)

    settle_customer(session, customer.id)

    assert payments_of(session, three.id) == [("voucher", 300)]
    assert payments_of(session, eight.id) == [("cash", 600), ("voucher", 200)]
    assert payments_of(session, ten.id) == [("card", 400), ("cash", 600)]
    assert all(session.get(Invoice, i.id).state == "paid" for i in (ten, three, eight))
    intents = succeeded_intents(session, customer.id)
    assert [(pi.amount, pi.payment_method) for pi in intents] == [(400, card.stripe_payment_method_id)]
    payment = session.scalar(select(InvoicePayment).where(InvoicePayment.source == "card"))
    assert payment.payment_intent_id == intents[0].id
    assert_money_invariants(session, customer.id)


def test_declined_default_card_falls_back_to_the_newest_other_card(session, factory, stripe):
    customer = factory.customer()
    older = add_card(session, customer.id, created_at=utcnow() - timedelta(days=5))
    newer = add_card(session, customer.id, "5555555555554444", created_at=utcnow() - timedelta(days=1))
    declining = add_card(session, customer.id, DECLINES_OFF_SESSION, default=True)
    invoice = make_invoice(session, customer.id, 2500)

    settle_customer(session, customer.id)

    session.expire_all()
    attempts = list(session.scalars(select(ChargeAttempt).order_by(ChargeAttempt.attempt_no)))
    assert [(a.card_id, a.status) for a in attempts] == [(declining.id, "declined"), (newer.id, "succeeded")]
    assert session.get(Invoice, invoice.id).state == "paid"
    assert payments_of(session, invoice.id) == [("card", 2500)]
    assert [pi.payment_method for pi in succeeded_intents(session, customer.id)] == [newer.stripe_payment_method_id]
    assert older.id not in {a.card_id for a in attempts}


def test_no_usable_card_leaves_the_invoice_open_with_its_partial_payments(session, factory, stripe):
    customer = factory.customer()
    add_card(session, customer.id, DECLINES_OFF_SESSION, default=True)
    invoice = make_invoice(session, customer.id, 2000)
    credit(session, customer.id, "voucher", 300)
    credit(session, customer.id, "cash", 200)

    report = settle_customer(session, customer.id)

    session.expire_all()
    stored = session.get(Invoice, invoice.id)
    assert (stored.state, stored.paid_cents, stored.amount_due_cents) == ("open", 500, 1500)
    assert payments_of(session, invoice.id) == [("cash", 200), ("voucher", 300)]
    assert report.card_attempts == 1 and succeeded_intents(session, customer.id) == []
    assert session.get(SettlementRequest, customer.id) is None
    # a later trigger does not hammer the card that just declined this invoice
    assert settle_customer(session, customer.id).card_attempts == 0
    assert_money_invariants(session, customer.id)


def test_twenty_concurrent_triggers_charge_each_invoice_at_most_once(app, session, factory, stripe, worker):
    from app.billing.settlement_requests import request_settlement
    from app.extensions import db

    customer = factory.customer()
    add_card(session, customer.id, DECLINES_OFF_SESSION, default=True)
    good = add_card(session, customer.id, created_at=utcnow() - timedelta(days=1))
    invoices = [make_invoice(session, customer.id, amount) for amount in (400, 600, 800, 1000)]
    credit(session, customer.id, "cash", 1100)
    barrier = threading.Barrier(20)
    errors = []

    def trigger(n):
        with app.app_context():
            s = db.new_session()
            try:
                barrier.wait()
                if n % 2:
                    settle_customer(s, customer.id)
                else:
                    request_settlement(s, customer.id)  # enqueues a real RQ job after commit
                    s.commit()
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                s.close()

    procs = [worker.start(), worker.start()]
    threads = [threading.Thread(target=trigger, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    worker.run_burst()
    for proc in procs:
        worker.kill(proc)
    assert not errors

    session.expire_all()
    assert all(session.get(Invoice, i.id).state == "paid" for i in invoices)
    intents = succeeded_intents(session, customer.id)
    # cash 1100 pays 400 + 600 and 100 of 800; the good card pays 700 and 1000, once each
    assert sorted(pi.amount for pi in intents) == [700, 1000]
    assert {pi.payment_method for pi in intents} == {good.stripe_payment_method_id}
    for invoice in invoices:
        assert len([p for p in payments_of(session, invoice.id) if p[0] == "card"]) <= 1
    assert_money_invariants(session, customer.id)


def test_a_charge_error_after_stripe_executed_it_is_unknown_and_the_retry_does_not_charge_twice(
    session, factory, stripe
):
    customer = factory.customer()
    add_card(session, customer.id, default=True)
    invoice = make_invoice(session, customer.id, 1500)
    credit(session, customer.id, "cash", 500)
    stripe.set_fault("/v1/payment_intents", "error_after_forward")

    first = settle_customer(session, customer.id)

    session.expire_all()
    attempt = session.scalar(select(ChargeAttempt))
    assert attempt.status == "unknown" and not first.complete
    stored = session.get(Invoice, invoice.id)
    assert (stored.state, stored.paid_cents) == ("open", 500)  # cash applied, card outcome not guessed
    assert payments_of(session, invoice.id) == [("cash", 500)]
    assert session.get(SettlementRequest, customer.id) is not None  # kept for the sweep
    assert len(succeeded_intents(session, customer.id)) == 1  # Stripe did charge

    second = settle_customer(session, customer.id)

    session.expire_all()
    assert second.complete
    attempts = list(session.scalars(select(ChargeAttempt)))
    assert [(a.attempt_no, a.status) for a in attempts] == [(1, "succeeded")]
    assert session.get(Invoice, invoice.id).state == "paid"
    intents = succeeded_intents(session, customer.id)
    assert len(intents) == 1 and intents[0].amount == 1000
    assert attempts[0].payment_intent_id == intents[0].id
    assert_money_invariants(session, customer.id)


def test_a_charge_that_fails_before_stripe_is_retried_with_the_same_key(session, factory, stripe):
    customer = factory.customer()
    add_card(session, customer.id, default=True)
    invoice = make_invoice(session, customer.id, 1200)
    stripe.set_fault("/v1/payment_intents", "error")

    settle_customer(session, customer.id)
    session.expire_all()
    assert session.scalar(select(ChargeAttempt)).status == "unknown"
    assert succeeded_intents(session, customer.id) == []

    settle_customer(session, customer.id)
    session.expire_all()
    attempts = list(session.scalars(select(ChargeAttempt)))
    assert [(a.attempt_no, a.status) for a in attempts] == [(1, "succeeded")]
    assert session.get(Invoice, invoice.id).state == "paid"
    assert len(succeeded_intents(session, customer.id)) == 1


def test_worker_killed_mid_charge_then_rerun_charges_once(app, session, factory, stripe, worker):
    from jobs.queue import enqueue
    from jobs.settlement import sweep_settlement_requests

    customer = factory.customer()
    add_card(session, customer.id, default=True)
    invoices = [make_invoice(session, customer.id, amount) for amount in (300, 1700)]
    credit(session, customer.id, "voucher", 300)
    stripe.set_fault("/v1/payment_intents", "timeout", delay=15)
    session.execute(SettlementRequest.__table__.update().values(requested_at=utcnow()))
    session.commit()

    proc = worker.start()
    from jobs.queue import enqueue_settlement

    enqueue_settlement(customer.id)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        session.expire_all()
        attempt = session.scalar(select(ChargeAttempt))
        if attempt is not None and attempt.status == "pending":
            break
        time.sleep(0.1)
    else:
        pytest.fail("the worker never reached the card charge")
    deadline = time.monotonic() + 30
    while stripe.faults() and time.monotonic() < deadline:  # the charge has met the held fault
        time.sleep(0.05)
    assert not stripe.faults(), "the card charge never reached the emulator"
    worker.kill(proc)
    stripe.clear_faults()

    session.expire_all()
    assert session.scalar(select(ChargeAttempt)).status == "pending"
    assert session.get(Invoice, invoices[0].id).state == "paid"  # voucher part committed before
    assert session.get(Invoice, invoices[1].id).state == "open"
    assert session.get(SettlementRequest, customer.id) is not None

    session.execute(
        ChargeAttempt.__table__.update().values(updated_at=utcnow() - timedelta(minutes=1))
    )
    session.execute(SettlementRequest.__table__.update().values(requested_at=utcnow() - timedelta(minutes=1)))
    session.commit()
    assert enqueue(sweep_settlement_requests)
    worker.run_burst()

    session.expire_all()
    attempts = list(session.scalars(select(ChargeAttempt)))
    assert [(a.attempt_no, a.status) for a in attempts] == [(1, "succeeded")]
    assert [session.get(Invoice, i.id).state for i in invoices] == ["paid", "paid"]
    assert payments_of(session, invoices[1].id) == [("card", 1700)]
    intents = succeeded_intents(session, customer.id)
    assert len(intents) == 1 and intents[0].amount == 1700
    assert session.get(SettlementRequest, customer.id) is None
    assert_money_invariants(session, customer.id)
