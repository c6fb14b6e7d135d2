"""Monthly usage invoicing (SPEC §7) — worked examples with exact amounts, on both paths."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from app.billing import monthly
from app.billing.usage import period_bounds
from app.models import Invoice, InvoiceLine, InvoiceNumberCounter, SettlementRequest
from tests.integration.usage_helpers import event, make_plan, run_deployment

pytestmark = pytest.mark.integration


@pytest.fixture(params=["bulk", "bulk_row_triggers", "per_customer"])
def issue(request, app, monkeypatch):
    """Run the monthly invoicing of a period through one of the two paths, as the job does: just after
    the period has ended. `bulk_row_triggers` is the bulk path for a database role that may not turn the
    row-by-row foreign-key triggers off."""
    if request.param == "bulk_row_triggers":
        monkeypatch.setattr(monthly, "_row_triggers_off", lambda session: False)

    def run(period):
        from app.extensions import db

        now = period_bounds(period)[1] + timedelta(minutes=5)
        s = db.new_session()
        try:
            if request.param.startswith("bulk"):
                return monthly.issue_monthly_invoices_bulk(s, period, now=now)
            return monthly.issue_monthly_invoices_per_customer(s, period, now=now)
        finally:
            s.close()

    return run


def _invoice(session, customer, period) -> Invoice | None:
    session.expire_all()
    return session.scalar(select(Invoice).where(Invoice.customer_id == customer.id, Invoice.billing_period == period))


def _lines(session, invoice) -> list[tuple]:
    return [
        (line.description, line.seconds, line.hourly_price, line.amount_cents)
        for line in session.scalars(
            select(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id).order_by(InvoiceLine.deployment_id)
        )
    ]


def test_deployment_across_month_end_is_split_across_two_invoices_by_the_second(issue, session, factory):
    customer = factory.customer()
    make_plan(session, price="0.100000")
    run_deployment(session, customer, "dep-split", "vm-small", "2026-10-31T10:30:00", "2026-11-01T02:15:00")

    issue("2026-10")
    october = _invoice(session, customer, "2026-10")
    assert _lines(session, october) == [("dep-split", 13 * 3600 + 1800, Decimal("0.100000"), 135)]
    assert october.state == "open" and october.number and october.total_cents == 135

    issue("2026-11")
    november = _invoice(session, customer, "2026-11")
    # 2h15m × 0.10 = 22.5 cents → half-even → 22
    assert _lines(session, november) == [("dep-split", 2 * 3600 + 900, Decimal("0.100000"), 22)]
    assert session.scalar(select(func.sum(InvoiceLine.seconds))) == 13.5 * 3600 + 2.25 * 3600


def test_price_change_mid_month_bills_old_deployments_at_old_price_and_new_ones_at_new(issue, session, factory):
    from app.billing import pricing
    from tests.integration.usage_helpers import at

    customer = factory.customer()
    plan = make_plan(session, price="0.100000")
    run_deployment(session, customer, "old", "vm-small", "2026-10-01T00:00:00")
    pricing.change_price(session, None, plan.id, "0.200000", at("2026-10-15T00:00:00"))
    run_deployment(session, customer, "new", "vm-small", "2026-10-20T00:00:00")

    issue("2026-10")
    invoice = _invoice(session, customer, "2026-10")
    assert _lines(session, invoice) == [
        ("old", 31 * 24 * 3600, Decimal("0.100000"), 7440),  # 744 h × 0.10
        ("new", 12 * 24 * 3600, Decimal("0.200000"), 5760),  # 288 h × 0.20
    ]
    assert invoice.subtotal_cents == 13200


def test_failed_deployments_and_suspended_intervals_bill_nothing(issue, session, factory):
    customer = factory.customer()
    only_failed = factory.customer()
    make_plan(session, price="0.100000")
    event(session, customer, "broken", "created", "2026-10-01T00:00:00", plan="vm-small")
    event(session, customer, "broken", "failed", "2026-10-01T00:05:00")
    event(session, only_failed, "broken-2", "created", "2026-10-01T00:00:00", plan="vm-small")
    event(session, only_failed, "broken-2", "failed", "2026-10-01T00:05:00")
    run_deployment(session, customer, "pausing", "vm-small", "2026-10-01T00:00:00")
    event(session, customer, "pausing", "suspended", "2026-10-02T00:00:00")
    event(session, customer, "pausing", "resumed", "2026-10-03T00:00:00")
    event(session, customer, "pausing", "deleted", "2026-10-04T00:00:00")

    issue("2026-10")
    assert _lines(session, _invoice(session, customer, "2026-10")) == [
        ("pausing", 48 * 3600, Decimal("0.100000"), 480)
    ]
    assert _invoice(session, only_failed, "2026-10") is None


def test_each_line_is_rounded_half_even_once_and_tax_is_on_the_subtotal(issue, app, session, factory):
    app.config.update(VAT_RATE="0.19", VAT_COUNTRY_RATES="FR=0.20")
    customer = factory.customer(country="DE")
    french = factory.customer(country="FR")
    for price, size in (("0.010000", "small"), ("0.030000", "medium"), ("0.050000", "large")):
        make_plan(session, size=size, price=price)
        # half an hour: 0.5, 1.5 and 2.5 cents → 0, 2, 2 (half-even per line)
        run_deployment(session, customer, f"half-{size}", f"vm-{size}", "2026-10-10T00:00:00", "2026-10-10T00:30:00")
    run_deployment(session, french, "fr", "vm-large", "2026-10-01T00:00:00", "2026-10-02T00:00:00")
    try:
        issue("2026-10")
    finally:
        app.config.update(VAT_RATE="0", VAT_COUNTRY_RATES=None)
    invoice = _invoice(session, customer, "2026-10")
    assert [line[3] for line in _lines(session, invoice)] == [0, 2, 2]  # small, medium, large
    assert (invoice.subtotal_cents, invoice.tax_rate, invoice.tax_cents, invoice.total_cents) == (
        4, Decimal("0.19"), 1, 5,  # 0.76 → 1
    )
    fr = _invoice(session, french, "2026-10")
    assert (fr.subtotal_cents, fr.tax_cents, fr.total_cents) == (120, 24, 144)


def test_rerunning_issues_no_duplicate_invoice_or_line_and_requests_settlement(issue, session, factory):
    customers = [factory.customer() for _ in range(3)]
    make_plan(session)
    for n, customer in enumerate(customers):
        run_deployment(session, customer, f"d{n}", "vm-small", "2026-10-05T00:00:00", "2026-10-06T00:00:00")

    first = issue("2026-10")
    second = issue("2026-10")
    assert first.invoices == 3 and second.invoices == 0
    session.expire_all()
    assert session.scalar(select(func.count(Invoice.id))) == 3
    assert session.scalar(select(func.count(InvoiceLine.id))) == 3
    assert session.scalar(select(func.count(InvoiceLine.id))) == 3
    numbers = sorted(session.scalars(select(Invoice.number_seq)))
    assert numbers == [1, 2, 3]
    assert session.scalar(select(InvoiceNumberCounter.last_seq)) == 3
    assert {r.customer_id for r in session.scalars(select(SettlementRequest))} == {c.id for c in customers}


def test_late_event_for_a_closed_period_lands_on_the_next_invoice(issue, session, factory):
    customer = factory.customer()
    make_plan(session, price="0.100000")
    run_deployment(session, customer, "steady", "vm-small", "2026-10-01T00:00:00", "2026-10-02T00:00:00")
    event(session, customer, "late", "created", "2026-10-30T23:00:00", plan="vm-small")

    issue("2026-10")
    assert _lines(session, _invoice(session, customer, "2026-10")) == [("steady", 86400, Decimal("0.100000"), 240)]
    # reported after October was invoiced: it started on Oct 31 at noon and was deleted Nov 2 at noon
    event(session, customer, "late", "succeeded", "2026-10-31T12:00:00")
    event(session, customer, "late", "deleted", "2026-11-02T12:00:00")

    issue("2026-11")
    assert _lines(session, _invoice(session, customer, "2026-11")) == [("late", 48 * 3600, Decimal("0.100000"), 480)]
    issue("2026-12")
    assert _invoice(session, customer, "2026-12") is None


def test_concurrent_runs_from_two_threads_issue_each_invoice_once(issue, app, session, factory):
    customers = [factory.customer() for _ in range(6)]
    make_plan(session)
    for n, customer in enumerate(customers):
        run_deployment(session, customer, f"c{n}", "vm-small", "2026-10-01T00:00:00", "2026-10-03T00:00:00")
        run_deployment(session, customer, f"c{n}b", "vm-small", "2026-10-04T00:00:00", "2026-10-05T00:00:00")

    barrier = threading.Barrier(2)
    errors = []

    def run():
        barrier.wait()
        try:
            with app.app_context():
                issue("2026-10")
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    session.expire_all()
    assert session.scalar(select(func.count(Invoice.id))) == 6
    assert session.scalar(select(func.count(InvoiceLine.id))) == 12
    assert session.scalar(select(func.count(InvoiceLine.id))) == 12
    assert sorted(session.scalars(select(Invoice.number_seq))) == list(range(1, 7))


def test_monthly_job_defaults_to_previous_month_and_runs_in_a_real_worker(app, session, factory, worker):
    from jobs.invoicing import issue_monthly_invoices
    from jobs.queue import enqueue

    customer = factory.customer()
    make_plan(session)
    from app.billing.usage import previous_period

    period = previous_period()
    run_deployment(session, customer, "w", "vm-small", f"{period}-02T00:00:00", f"{period}-03T00:00:00")
    assert enqueue(issue_monthly_invoices)
    assert enqueue(issue_monthly_invoices)
    worker.run_burst()
    session.expire_all()
    invoices = session.scalars(select(Invoice)).all()
    assert [(i.customer_id, i.billing_period, i.total_cents) for i in invoices] == [(customer.id, period, 240)]


def test_monthly_job_then_settles_everyone_in_batches_through_the_worker(app, session, factory, worker):
    from app.billing.ledger import post_entry
    from app.billing.usage import previous_period
    from jobs.invoicing import issue_monthly_invoices
    from jobs.queue import enqueue

    funded, broke = factory.customer(), factory.customer()
    post_entry(session, customer_id=funded.id, account="cash", amount_cents=1000, kind="adjustment",
               idempotency_key="test-funds")
    session.commit()
    make_plan(session)
    period = previous_period()
    for customer, name in ((funded, "f"), (broke, "b")):
        run_deployment(session, customer, name, "vm-small", f"{period}-02T00:00:00", f"{period}-03T00:00:00")
    assert enqueue(issue_monthly_invoices)
    worker.run_burst()  # the invoicing job enqueues the batch settlement; the same burst runs it
    session.expire_all()
    states = {i.customer_id: (i.state, i.paid_cents) for i in session.scalars(select(Invoice))}
    assert states == {funded.id: ("paid", 240), broke.id: ("open", 0)}
    assert session.get(type(funded), funded.id).cash_balance_cents == 760


@pytest.mark.parametrize("replica", [False, True], ids=["origin", "replica_mode"])
def test_users_and_deployments_are_never_deleted_nor_renumbered(session, factory, replica):
    """What the bulk run's lines, invoices, settlement requests and notifications reference cannot go
    away: the database refuses to delete a user or a deployment, or to change its id, in any session
    (also one in replica mode, which skips ordinary triggers and foreign keys). Other columns change."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from app.extensions import db
    from app.models.usage import Deployment

    customer = factory.customer()
    make_plan(session)
    run_deployment(session, customer, "kept", "vm-small", "2026-10-05T00:00:00", "2026-10-06T00:00:00")
    deployment_id = session.scalar(select(Deployment.id).where(Deployment.external_id == "kept"))
    session.commit()
    attempts = [
        ("DELETE FROM deployments WHERE id = :d", {"d": deployment_id}),
        ("DELETE FROM users WHERE id = :u", {"u": customer.id}),
        ("UPDATE deployments SET id = id + 1000 WHERE id = :d", {"d": deployment_id}),
        ("UPDATE users SET id = id + 1000 WHERE id = :u", {"u": customer.id}),
    ]
    for statement, params in attempts:
        other = db.new_session()
        try:
            if replica:
                other.execute(text("SET LOCAL session_replication_role = replica"))
            with pytest.raises(DBAPIError, match="never deleted and keep their id"):
                other.execute(text(statement), params)
        finally:
            other.rollback()
            other.close()
    other = db.new_session()
    try:
        other.execute(text("UPDATE users SET name = 'Renamed' WHERE id = :u"), {"u": customer.id})
        other.execute(text("UPDATE deployments SET name = 'renamed' WHERE id = :d"), {"d": deployment_id})
        other.commit()
    finally:
        other.close()
    session.expire_all()
    assert session.get(Deployment, deployment_id).name == "renamed"
    assert session.get(type(customer), customer.id).name == "Renamed"


def test_bulk_run_takes_no_row_lock_on_customers_or_deployments(app, session, factory, monkeypatch):
    """Users and deployments cannot be deleted, so the bulk run (row triggers off) does not lock them:
    it completes while another transaction holds a customer's and a deployment's rows FOR UPDATE (the
    strongest row lock, which a foreign-key check's FOR KEY SHARE would wait for). `lock_timeout`
    bounds the wait should it lock them after all."""
    from sqlalchemy import text

    from app.extensions import db
    from app.models.usage import Deployment

    turned_off = []
    real_row_triggers_off = monthly._row_triggers_off
    monkeypatch.setattr(monthly, "_row_triggers_off", lambda s: turned_off.append(real_row_triggers_off(s)) or turned_off[-1])
    customer = factory.customer()
    make_plan(session)
    run_deployment(session, customer, "busy", "vm-small", "2026-10-05T00:00:00", "2026-10-06T00:00:00")
    deployment_id = session.scalar(select(Deployment.id).where(Deployment.external_id == "busy"))
    session.commit()
    holder = db.new_session()
    try:
        holder.execute(text("SELECT id FROM users WHERE id = :u FOR UPDATE"), {"u": customer.id})
        holder.execute(text("SELECT id FROM deployments WHERE id = :d FOR UPDATE"), {"d": deployment_id})
        s = db.new_session()
        try:
            s.execute(text("SET LOCAL lock_timeout = '10s'"))  # the run's own transaction
            report = monthly.issue_monthly_invoices_bulk(s, "2026-10", now=period_bounds("2026-10")[1])
        finally:
            s.close()
    finally:
        holder.rollback()
        holder.close()
    assert turned_off == [True]  # the test database's role may turn the row triggers off
    assert (report.invoices, report.lines) == (1, 1)
    session.expire_all()
    line = session.scalar(select(InvoiceLine))
    assert (line.deployment_id, line.seconds) == (deployment_id, 86400)


@pytest.mark.parametrize("handover_limit", [1000, 1], ids=["small_run", "large_run"])
def test_bulk_run_queues_each_invoice_issued_notification_and_hands_over_only_a_small_runs_ids(
    app, session, factory, monkeypatch, handover_limit
):
    """The bulk statement writes one invoice-issued notification per invoice (the same row
    `queue_notification` writes). A small run hands their ids and its settlement requests to the
    after-commit hooks; a run larger than HANDOVER_LIMIT returns no ids at all (the job's memory does
    not grow with the run) and leaves both to the periodic sweeps, which find every row."""
    from app.billing import notifications, settlement_requests
    from app.extensions import db
    from app.models.base import utcnow
    from app.models.notification import Notification

    monkeypatch.setattr(monthly, "HANDOVER_LIMIT", handover_limit)
    sent, settled = [], []
    monkeypatch.setattr(notifications, "_sender", sent.extend)
    monkeypatch.setattr(settlement_requests, "_enqueue_settlement", settled.append)
    customers = [factory.customer() for _ in range(2)]
    make_plan(session)
    for n, customer in enumerate(customers):
        run_deployment(session, customer, f"n{n}", "vm-small", "2026-10-05T00:00:00", "2026-10-06T00:00:00")
    session.commit()

    s = db.new_session()
    try:
        report = monthly.issue_monthly_invoices_bulk(s, "2026-10", now=period_bounds("2026-10")[1] + timedelta(minutes=5))
    finally:
        s.close()

    assert report.invoices == 2
    session.expire_all()
    invoices = session.scalars(select(Invoice).order_by(Invoice.customer_id)).all()
    rows = session.scalars(select(Notification).order_by(Notification.customer_id)).all()
    assert [(r.customer_id, r.kind, r.template, r.key, r.subject, r.context, r.attachment, r.status, r.message_id)
            for r in rows] == [
        (i.customer_id, "invoice_issued", "invoice_issued", f"invoice-issued:{i.id}", f"Your Paydesk invoice {i.number}",
         {"invoice_id": i.id}, ["invoice_pdf", i.id], "pending", notifications.message_id_for(f"invoice-issued:{i.id}"))
        for i in invoices
    ]
    if handover_limit >= 2:
        assert sorted(sent) == sorted(r.id for r in rows)
        assert sorted(settled) == [c.id for c in customers]
    else:
        assert sent == [] and settled == []
        later = utcnow() + notifications.REQUEUE_AFTER + timedelta(seconds=5)
        assert sorted(notifications.due_notifications(session, later)) == sorted(r.id for r in rows)
