"""The set-based balance settlement (bulk jobs) pays exactly what the per-customer engine pays."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from app.billing.settlement import settle_balances_bulk, settle_customer
from app.models import Invoice, InvoicePayment, LedgerEntry, SettlementRequest
from app.models.base import utcnow
from tests.money_support import assert_money_invariants, credit, make_invoice

pytestmark = pytest.mark.integration

SCENARIOS = [
    # (voucher, cash, invoice amounts in issue order)
    (500, 1200, [1000, 300, 800]),
    (0, 700, [500, 500, 200]),
    (250, 0, [100, 100, 100]),
    (0, 0, [400]),
    (10_000, 10_000, [1, 2, 3]),
    (300, 300, [700, 50]),
]


def build(session, factory, voucher, cash, amounts):
    customer = factory.customer()
    start = utcnow() - timedelta(days=10)
    for n, amount in enumerate(amounts):
        make_invoice(session, customer.id, amount, now=start + timedelta(hours=n))
    if voucher:
        credit(session, customer.id, "voucher", voucher)
    if cash:
        credit(session, customer.id, "cash", cash)
    return customer.id


def outcome(session, customer_id):
    session.expire_all()
    invoices = list(session.scalars(select(Invoice).where(Invoice.customer_id == customer_id).order_by(Invoice.id)))
    return [
        (i.state, i.paid_cents, sorted((p.source, p.amount_cents) for p in i.payments)) for i in invoices
    ]


def test_bulk_balance_settlement_matches_the_per_customer_engine(session, factory):
    engine_ids = [build(session, factory, *scenario) for scenario in SCENARIOS]
    bulk_ids = [build(session, factory, *scenario) for scenario in SCENARIOS]

    for customer_id in engine_ids:
        settle_customer(session, customer_id)
    remaining = settle_balances_bulk(session, bulk_ids)

    for engine_id, bulk_id in zip(engine_ids, bulk_ids, strict=True):
        assert outcome(session, bulk_id) == outcome(session, engine_id)
        assert_money_invariants(session, bulk_id)
    # customers with something still due are handed back to the engine (cards), others are done
    assert remaining == [bulk_ids[n] for n in (0, 1, 2, 3, 5)]
    assert session.get(SettlementRequest, bulk_ids[4]) is None
    assert session.get(SettlementRequest, bulk_ids[2]) is not None


def test_running_the_bulk_settlement_twice_pays_nothing_twice(session, factory):
    ids = [build(session, factory, 0, 600, [400, 400]) for _ in range(3)]
    settle_balances_bulk(session, ids)
    entries = len(list(session.scalars(select(LedgerEntry))))
    settle_balances_bulk(session, ids)
    for customer_id in ids:
        settle_customer(session, customer_id)
    session.expire_all()
    assert len(list(session.scalars(select(LedgerEntry)))) == entries
    assert len(list(session.scalars(select(InvoicePayment)))) == 6
    for customer_id in ids:
        assert_money_invariants(session, customer_id)


def test_settle_customers_job_through_a_real_worker(session, factory, worker):
    from jobs.queue import enqueue
    from jobs.settlement import settle_customers_job

    ids = [build(session, factory, 100, 900, [300, 700, 200]) for _ in range(4)]
    assert enqueue(settle_customers_job, ids)
    worker.run_burst()
    for customer_id in ids:
        assert [state for state, _, _ in outcome(session, customer_id)] == ["paid", "open", "paid"]
        assert_money_invariants(session, customer_id)
        assert session.get(SettlementRequest, customer_id) is None
