"""The customer dashboard reads its figures, dunning panel, foresight panel and open invoices from one
account-summary query and one deployments query (plus the live-session check every request makes):
a customer with a long history still costs three SQL statements, and the figures are the ones the
per-feature services compute."""

from datetime import timedelta

import pytest
from sqlalchemy import event

from app.billing.accounts_view import customer_dashboard, dashboard_figures
from app.billing.dunning import dunning_summary
from app.billing.foresight import customer_forecast
from app.billing.ledger import post_entry
from app.extensions import db
from tests.conftest import login
from tests.integration.dunning_helpers import at, open_invoice, pay, travel
from tests.integration.usage_helpers import add_card, make_plan, run_deployment

pytestmark = pytest.mark.integration

NOW = at("2026-11-20T12:00:00")
DASHBOARD_STATEMENTS = 3  # the session check, the account summary, the deployments with their events


def _history(session, customer, *, card: bool):
    """Twelve invoices (ten paid, two open, the older one overdue), cards, funds, four deployments
    (three running), a spending limit."""
    from app.billing import spending_limits

    invoices = []
    for month in range(12):
        invoice = open_invoice(session, customer, 1000 + 100 * month, at(f"2025-{month + 1:02d}-03T08:00:00")
                               if month < 11 else at("2026-11-02T08:00:00"))
        invoices.append(invoice)
    for invoice in invoices[:10]:
        pay(session, invoice, at("2026-01-05T00:00:00"))
    if card:
        add_card(session, customer)
        add_card(session, customer, exp_year=2020)  # expired: not usable
    for n in range(20):
        post_entry(session, customer_id=customer.id, account="voucher" if n % 2 else "cash", amount_cents=150 + n,
                   kind="voucher_redemption" if n % 2 else "topup", idempotency_key=f"dash-q-{customer.id}-{n}")
    session.commit()
    make_plan(session, size="small", price="0.100000")
    make_plan(session, size="large", price="0.400000")
    for n, (plan, start, end) in enumerate((("vm-small", "2026-10-01T00:00:00", None),
                                           ("vm-large", "2026-11-10T00:00:00", None),
                                           ("vm-small", "2026-11-15T06:00:00", None),
                                           ("vm-large", "2026-11-01T00:00:00", "2026-11-03T00:00:00"))):
        run_deployment(session, customer, f"dq-{customer.id}-{n}", plan, start, end, name=f"web-{n}")
    spending_limits.set_customer_limit(session, customer.id, 50_000)
    session.commit()
    return invoices


def _count_statements(app, client, path):
    statements = []

    def count(_conn, _cursor, statement, *_args):
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        response = client.get(path)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return response, statements


@pytest.mark.parametrize("card", [True, False], ids=["with-card", "voucher-only"])
def test_the_dashboard_of_a_customer_with_history_takes_three_statements(app, session, factory, client, card):
    customer = factory.customer(email=f"history-{card}@example.com", name="Grace Hopper")
    invoices = _history(session, customer, card=card)

    with travel(NOW):
        login(client, customer.email)
        assert client.get("/dashboard").status_code == 200  # templates compiled
        response, statements = _count_statements(app, client, "/dashboard")

    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert len(statements) <= DASHBOARD_STATEMENTS, "\n\n".join(statements)
    # the page still shows the account: the open invoices, the debt, the usage rows
    assert invoices[10].number in html and invoices[11].number in html
    assert 'id="dunning-debt"' in html and 'id="usage-table"' in html
    assert "web-1" in html and "web-3" in html


@pytest.mark.parametrize("card", [True, False], ids=["with-card", "voucher-only"])
def test_the_dashboard_read_model_agrees_with_the_services_it_replaces(app, session, factory, card):
    customer = factory.customer(email=f"agree-{card}@example.com")
    invoices = _history(session, customer, card=card)

    for moment in (NOW, NOW + timedelta(days=80)):  # the second one is inside the deletion warning
        with travel(moment):
            session.expire_all()
            view = customer_dashboard(session, customer.id, moment)
            assert view.figures == dashboard_figures(session, customer.id)
            assert view.dunning == dunning_summary(session, customer.id, moment)
            assert view.forecast == customer_forecast(session, customer.id, moment)
            assert [inv.id for inv in view.open_invoices] == [invoices[10].id, invoices[11].id]
    assert view.dunning.deletion_warning and view.dunning.oldest_overdue.id == invoices[10].id
    assert (view.dunning.runway is None) == card
