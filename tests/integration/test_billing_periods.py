"""Billing periods (SPEC §7): an invoice only ever bills time that has passed. A period that has not
started is refused; the current period bills up to now ("month to date") and the month's next invoice
bills the rest, exactly once; recompute-usage finds no difference after any invoicing path; can-deploy
and the runway count only time not yet invoiced."""

from datetime import datetime

import pytest
import time_machine
from sqlalchemy import func, select

from app.billing import monthly
from app.billing.dunning import voucher_runway
from app.billing.ledger import post_entry
from app.billing.usage import events_by_deployment, period_bounds, running_seconds
from app.models import AuditLog, Invoice, InvoiceLine
from app.models.usage import Deployment
from tests.conftest import PLATFORM_TOKEN, get_csrf, login
from tests.integration.usage_helpers import at, event, make_plan, run_deployment

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}


def travel(moment: datetime):
    return time_machine.travel(moment, tick=False)


def _issue_by_hand(client, customer, period):
    token = get_csrf(client, "/admin/invoices")
    return client.post("/admin/invoices/issue",
                       data={"customer_email": customer.email, "period": period, "csrf_token": token})


def _invoices(session, customer, period):
    session.expire_all()
    return list(session.scalars(
        select(Invoice).where(Invoice.customer_id == customer.id, Invoice.billing_period == period)
        .order_by(Invoice.period_end)
    ))


def _line_seconds(session, invoice):
    return [line.seconds for line in session.scalars(
        select(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id).order_by(InvoiceLine.deployment_id))]


def _counts(session):
    session.expire_all()
    return (session.scalar(select(func.count(Invoice.id))), session.scalar(select(func.count(InvoiceLine.id))))


def _recompute(app, period) -> str:
    result = app.test_cli_runner().invoke(args=["recompute-usage", "--period", period])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_five_second_vm_invoiced_this_month_bills_five_seconds_next_month_is_refused_and_the_rest_is_billed_once(
    app, client, session, factory
):
    admin = factory.admin()
    customer = factory.customer()
    make_plan(session, size="large", price="36.000000")  # 1 cent a second
    now = at("2026-11-21T12:00:00")
    with travel(now):
        run_deployment(session, customer, "vm-5s", "vm-large", "2026-11-21T11:59:55")
        login(client, admin.email, "admin-password-1")
        form = client.get("/admin/invoices").get_data(as_text=True)
        assert "month to date, up to now" in form

        issued = _issue_by_hand(client, customer, "2026-11")
        assert issued.status_code == 303
        page = client.get(issued.headers["Location"]).get_data(as_text=True)
        assert "month to date up to 2026-11-21 12:00:00 UTC (the rest is billed later)" in page
        [mtd] = _invoices(session, customer, "2026-11")
        assert (mtd.period_start, mtd.period_end, mtd.total_cents) == (at("2026-11-01T00:00:00"), now, 5)
        assert _line_seconds(session, mtd) == [5]
        audit = session.scalar(select(AuditLog).where(AuditLog.action == "invoice.issue_usage"))
        assert audit.after["period_end"] == now.isoformat()

        before = _counts(session)
        future = _issue_by_hand(client, customer, "2026-12")
        assert future.status_code == 422
        assert "2026-12 has not started yet: an invoice only bills time that has passed" in future.get_data(as_text=True)
        again = _issue_by_hand(client, customer, "2026-11")
        assert again.status_code == 422 and "already invoiced up to now" in again.get_data(as_text=True)
        assert _counts(session) == before
        assert "deployments=1 differences=0" in _recompute(app, "2026-11")

    # The monthly job on the 1st bills the rest of November once: 21 Nov 12:00 → 1 Dec = 228 h.
    with travel(at("2026-12-01T00:05:00")):
        for _ in range(2):
            monthly.issue_monthly_invoices(session)
        first, rest = _invoices(session, customer, "2026-11")
        assert first.id == mtd.id
        assert (rest.period_start, rest.period_end) == (now, at("2026-12-01T00:00:00"))
        assert _line_seconds(session, rest) == [228 * 3600]
        assert rest.total_cents == 228 * 3600
        assert "deployments=1 differences=0" in _recompute(app, "2026-11")
        login(client, admin.email, "admin-password-1")
        late = _issue_by_hand(client, customer, "2026-11")
        assert late.status_code == 422 and "already has an invoice for 2026-11" in late.get_data(as_text=True)
    deployment_id = session.scalar(select(Deployment.id))
    assert session.scalar(select(func.sum(InvoiceLine.seconds)).where(InvoiceLine.deployment_id == deployment_id)) \
        == 5 + 228 * 3600


def test_a_vm_deleted_after_a_month_to_date_invoice_is_not_billed_for_the_rest_of_the_month(app, session, factory):
    customer = factory.customer()
    make_plan(session, size="large", price="36.000000")
    with travel(at("2026-11-21T12:00:00")):
        run_deployment(session, customer, "vm", "vm-large", "2026-11-21T11:59:55")
        monthly.issue_customer_invoice(session, customer.id, "2026-11")
        event(session, customer, "vm", "deleted", "2026-11-21T12:00:07")
    with travel(at("2026-12-01T00:05:00")):
        monthly.issue_monthly_invoices(session)
        first, rest = _invoices(session, customer, "2026-11")
        assert (_line_seconds(session, first), _line_seconds(session, rest)) == ([5], [7])
        assert (first.total_cents, rest.total_cents) == (5, 7)
        assert "differences=0" in _recompute(app, "2026-11")


def _arrange_three_months(session, factory):
    """Two customers, deployments across October to December with a suspension and a deletion."""
    make_plan(session, price="0.100000")
    make_plan(session, size="medium", price="0.333333")
    one, two = factory.customer(email="one@example.com"), factory.customer(email="two@example.com")
    with travel(at("2026-10-05T00:00:00")):
        run_deployment(session, one, "a", "vm-small", "2026-10-05T00:00:00")
        run_deployment(session, two, "b", "vm-medium", "2026-10-20T08:30:17")
    with travel(at("2026-11-10T00:00:00")):
        event(session, two, "b", "suspended", "2026-11-09T10:00:00")
        event(session, two, "b", "resumed", "2026-11-10T00:00:00")
    return one, two


@pytest.mark.parametrize("rest_path", ["bulk", "per_customer"])
def test_recompute_usage_finds_no_difference_after_every_invoicing_path(app, client, session, factory, rest_path):
    one, two = _arrange_three_months(session, factory)
    admin = factory.admin()

    with travel(at("2026-11-01T00:05:00")):  # the monthly job, bulk PostgreSQL path
        assert monthly.issue_monthly_invoices_bulk(session, "2026-10").invoices == 2
        assert "deployments=2 differences=0" in _recompute(app, "2026-10")
    with travel(at("2026-12-01T00:05:00")):  # the monthly job, per-customer path
        assert monthly.issue_monthly_invoices_per_customer(session, "2026-11").invoices == 2
        assert "deployments=2 differences=0" in _recompute(app, "2026-11")
    with travel(at("2026-12-15T12:00:00")):  # the admin, by hand, for the current month
        login(client, admin.email, "admin-password-1")
        for customer in (one, two):
            assert _issue_by_hand(client, customer, "2026-12").status_code == 303
        assert "deployments=2 differences=0" in _recompute(app, "2026-12")
    with travel(at("2026-12-20T00:00:00")):
        event(session, two, "b", "deleted", "2026-12-20T00:00:00")
    with travel(at("2027-01-01T00:05:00")):  # then the monthly job for the rest of December
        issue = monthly.issue_monthly_invoices_bulk if rest_path == "bulk" else \
            monthly.issue_monthly_invoices_per_customer
        assert issue(session, "2026-12").invoices == 2
        assert issue(session, "2026-12").invoices == 0
        for period in ("2026-10", "2026-11", "2026-12"):
            assert "deployments=2 differences=0" in _recompute(app, period)
        for customer in (one, two):
            mtd, rest = _invoices(session, customer, "2026-12")
            assert (mtd.period_end, rest.period_start, rest.period_end) == (
                at("2026-12-15T12:00:00"), at("2026-12-15T12:00:00"), at("2027-01-01T00:00:00"))

        # every running second up to the end of December is billed exactly once
        session.expire_all()
        deployments = list(session.scalars(select(Deployment)))
        events = events_by_deployment(session, [d.id for d in deployments])
        for deployment in deployments:
            billed = session.scalar(select(func.sum(InvoiceLine.seconds))
                                    .where(InvoiceLine.deployment_id == deployment.id))
            assert billed == running_seconds(events[deployment.id], None, period_bounds("2026-12")[1])


def test_can_deploy_counts_the_rest_of_the_month_once_after_a_month_to_date_invoice(client, session, factory):
    customer = factory.customer()
    make_plan(session, price="0.100000")  # 240 h left on 21 Nov → 24.00 per deployment
    now = at("2026-11-21T00:00:00")
    with travel(now):
        run_deployment(session, customer, "running", "vm-small", "2026-11-01T00:00:00")
        post_entry(session, customer_id=customer.id, account="voucher", amount_cents=10_000,
                   kind="voucher_redemption", idempotency_key="test-voucher")
        session.commit()
        monthly.issue_customer_invoice(session, customer.id, "2026-11")
        [mtd] = _invoices(session, customer, "2026-11")
        assert (mtd.period_end, mtd.total_cents) == (now, 4800)  # 480 h up to now, nothing after
        answer = client.get(f"/api/v1/customers/{customer.id}/can-deploy?plan=vm-small", headers=AUTH).get_json()
        # the running deployment's rest of the month (not invoiced) + the new one's, each counted once
        assert (answer["allowed"], answer["required_cents"]) == (True, 4800)
        status = client.get(f"/api/v1/customers/{customer.id}/billing-status", headers=AUTH).get_json()
        assert status["active_cost_until_period_end_cents"] == 2400


def test_time_an_old_invoice_billed_ahead_is_not_counted_again_by_can_deploy_or_the_runway(client, session, factory):
    """Invoices issued before the rule billed the current month to its end: that time is paid for."""
    customer = factory.customer()
    make_plan(session, price="0.100000")
    now = at("2026-11-21T00:00:00")
    with travel(now):
        run_deployment(session, customer, "running", "vm-small", "2026-11-01T00:00:00")
        post_entry(session, customer_id=customer.id, account="voucher", amount_cents=10_000,
                   kind="voucher_redemption", idempotency_key="test-voucher")
        session.commit()
        before = voucher_runway(session, customer.id, now)
    # what the old admin action left behind: the whole of November billed on 21 November
    monthly.issue_customer_invoice(session, customer.id, "2026-11", now=at("2026-12-01T00:00:00"))
    [old] = _invoices(session, customer, "2026-11")
    assert (old.period_end, old.total_cents) == (at("2026-12-01T00:00:00"), 7200)
    with travel(now):
        answer = client.get(f"/api/v1/customers/{customer.id}/can-deploy?plan=vm-small", headers=AUTH).get_json()
        assert (answer["allowed"], answer["code"], answer["required_cents"]) == (True, "voucher", 2400)
        after = voucher_runway(session, customer.id, now)
    # before: 100.00 - 48.00 used, not invoiced yet; after: 100.00 - 72.00 debt + 24.00 already invoiced ahead
    assert (before.available_cents, after.available_cents) == (5200, 5200)
    assert before.runs_out_at == after.runs_out_at == at("2026-12-12T16:00:00")  # 52.00 at 0.10 an hour


def test_the_monthly_job_refuses_a_period_that_has_not_started(session, factory):
    with travel(at("2026-11-21T00:00:00")), pytest.raises(monthly.PeriodNotStarted):
        monthly.issue_monthly_invoices(session, "2026-12")
    assert _counts(session) == (0, 0)
