"""recompute-usage: rebuilds a period from the events and reports differences without changing invoices;
the admin can issue one customer's invoice for a period (audit-logged); demo plans are idempotent."""

import pytest
from sqlalchemy import func, select

from app.billing import monthly
from app.billing.pricing import ensure_demo_plans
from app.models import AuditLog, Invoice, InvoiceLine
from app.models.usage import Plan
from tests.conftest import get_csrf, login
from tests.integration.usage_helpers import event, make_plan, run_deployment

pytestmark = pytest.mark.integration


def test_recompute_reports_a_difference_and_changes_nothing(app, session, factory):
    customer = factory.customer()
    make_plan(session)
    run_deployment(session, customer, "a", "vm-small", "2026-10-01T00:00:00", "2026-10-02T00:00:00")
    event(session, customer, "b", "created", "2026-10-30T00:00:00", plan="vm-small")
    monthly.issue_monthly_invoices_bulk(session, "2026-10")
    runner = app.test_cli_runner()
    clean = runner.invoke(args=["recompute-usage", "--period", "2026-10"])
    assert "deployments=2 differences=0" in clean.output
    event(session, customer, "b", "succeeded", "2026-10-31T00:00:00")  # late: after October was invoiced
    before = session.execute(select(Invoice.total_cents, func.count(InvoiceLine.id)).join(InvoiceLine)
                             .group_by(Invoice.id)).all()
    for _ in range(2):
        result = runner.invoke(args=["recompute-usage", "--period", "2026-10"])
        assert "billed 0s 0c, recomputed 86400s 240c" in result.output
        assert "deployments=2 differences=1" in result.output
    session.expire_all()
    assert session.execute(select(Invoice.total_cents, func.count(InvoiceLine.id)).join(InvoiceLine)
                           .group_by(Invoice.id)).all() == before


def test_admin_issues_one_customers_invoice_for_a_period_and_it_is_audited(client, session, factory):
    admin = factory.admin()
    customer = factory.customer()
    make_plan(session)
    run_deployment(session, customer, "a", "vm-small", "2026-10-01T00:00:00", "2026-10-02T00:00:00")
    login(client, admin.email, "admin-password-1")
    token = get_csrf(client, "/admin/invoices")
    data = {"customer_email": customer.email, "period": "2026-10", "csrf_token": token}
    assert client.post("/admin/invoices/issue", data=data).status_code == 303
    again = client.post("/admin/invoices/issue", data=data)
    assert again.status_code == 422 and "already has an invoice" in again.get_data(as_text=True)
    session.expire_all()
    invoice = session.scalar(select(Invoice))
    assert (invoice.customer_id, invoice.billing_period, invoice.total_cents, invoice.state) == (
        customer.id, "2026-10", 240, "open")
    audit = session.scalar(select(AuditLog).where(AuditLog.action == "invoice.issue_usage"))
    assert audit.actor_id == admin.id and audit.after["number"] == invoice.number


def test_demo_plans_are_created_once(session):
    assert ensure_demo_plans(session) == 12
    assert ensure_demo_plans(session) == 0
    assert session.scalar(select(func.count(Plan.id))) == 12
