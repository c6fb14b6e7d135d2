"""Settlement engine (SPEC §8) against real PostgreSQL, Redis, RQ workers and the Stripe emulator."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.billing.settlement import settle_customer
from app.models import Invoice, InvoicePayment, SettlementRequest
from app.models.base import utcnow
from tests.money_support import assert_money_invariants, credit, make_invoice

pytestmark = pytest.mark.integration


def payments_of(session, invoice_id):
    session.expire_all()
    return sorted(
        (p.source, p.amount_cents)
        for p in session.scalars(select(InvoicePayment).where(InvoicePayment.invoice_id == invoice_id))
    )


def test_balances_pay_smallest_invoice_first_voucher_before_cash(session, factory):
    customer = factory.customer()
    start = utcnow() - timedelta(days=3)
    ten = make_invoice(session, customer.id, 1000, now=start)
    three = make_invoice(session, customer.id, 300, now=start + timedelta(hours=1))
    eight = make_invoice(session, customer.id, 800, now=start + timedelta(hours=2))
    credit(session, customer.id, "voucher", 500)
    credit(session, customer.id, "cash", 1200)

    settle_customer(session, customer.id)

    assert payments_of(session, three.id) == [("voucher", 300)]
    assert payments_of(session, eight.id) == [("cash", 600), ("voucher", 200)]
    assert payments_of(session, ten.id) == [("cash", 600)]
    states = {i.id: (i.state, i.paid_cents) for i in session.scalars(select(Invoice))}
    assert states == {three.id: ("paid", 300), eight.id: ("paid", 800), ten.id: ("open", 600)}
    assert session.get(type(customer), customer.id).cash_balance_cents == 0
    assert_money_invariants(session, customer.id)


def test_ties_on_amount_due_pay_the_oldest_invoice_first(session, factory):
    customer = factory.customer()
    newer = make_invoice(session, customer.id, 500, now=utcnow() - timedelta(days=1))
    older = make_invoice(session, customer.id, 500, now=utcnow() - timedelta(days=2))
    credit(session, customer.id, "cash", 500)

    settle_customer(session, customer.id)

    session.expire_all()
    assert session.get(Invoice, older.id).state == "paid"
    assert session.get(Invoice, newer.id).state == "open"


def test_settling_twice_pays_nothing_twice_and_clears_the_request(session, factory):
    customer = factory.customer()
    invoice = make_invoice(session, customer.id, 700)
    credit(session, customer.id, "cash", 400)
    assert session.get(SettlementRequest, customer.id) is not None

    first = settle_customer(session, customer.id)
    second = settle_customer(session, customer.id)

    assert first.payments == [(invoice.id, "cash", 400)] and second.payments == []
    assert payments_of(session, invoice.id) == [("cash", 400)]
    assert session.get(SettlementRequest, customer.id) is None
    assert_money_invariants(session, customer.id)


def test_twenty_concurrent_settlements_without_cards_pay_each_invoice_at_most_once(app, session, factory):
    from app.extensions import db

    customer = factory.customer()
    invoices = [make_invoice(session, customer.id, amount) for amount in (300, 500, 700, 900, 1100)]
    credit(session, customer.id, "voucher", 600)
    credit(session, customer.id, "cash", 1000)
    barrier = threading.Barrier(20)
    errors = []

    def run():
        with app.app_context():
            s = db.new_session()
            try:
                barrier.wait()
                settle_customer(s, customer.id)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                s.close()

    threads = [threading.Thread(target=run) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    session.expire_all()
    states = [session.get(Invoice, i.id).state for i in invoices]
    # 300 + 500 + 700 = 1500 of 1600: three paid, 100 left on the 900 invoice
    assert states == ["paid", "paid", "paid", "open", "open"]
    assert session.get(Invoice, invoices[3].id).paid_cents == 100
    assert_money_invariants(session, customer.id)


def test_a_topup_while_redis_is_down_is_settled_later_by_the_sweep(app, session, factory, worker):
    """The app points at a Redis port nothing listens on: the request succeeds, nothing is
    enqueued, and the sweep (run by a real worker once Redis is back) settles the invoice."""
    from jobs.queue import WORKER_QUEUES, enqueue_settlement_sweep, get_queue
    from tests.conftest import free_port

    customer = factory.customer()
    invoice = make_invoice(session, customer.id, 900)
    for name in WORKER_QUEUES:
        get_queue(name).empty()
    original = app.config["REDIS_URL"]
    app.config["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    try:
        credit(session, customer.id, "cash", 900)  # commits: the after-commit enqueue fails quietly
        from app.billing.settlement_requests import request_settlement

        request_settlement(session, customer.id)
        session.commit()
    finally:
        app.config["REDIS_URL"] = original
    assert sum(get_queue(name).count for name in WORKER_QUEUES) == 0
    session.expire_all()
    assert session.get(Invoice, invoice.id).state == "open"
    request = session.get(SettlementRequest, customer.id)
    assert request is not None
    request.requested_at = utcnow() - timedelta(seconds=30)
    session.commit()

    assert enqueue_settlement_sweep()
    worker.run_burst()

    session.expire_all()
    assert session.get(Invoice, invoice.id).state == "paid"
    assert session.get(SettlementRequest, customer.id) is None
    assert_money_invariants(session, customer.id)
