"""Usage corrections: recomputed usage lower than billed → a prefilled credit note, from the CLI
and the admin page; once credited, nothing is suggested any more."""

import re
from html import unescape

import pytest
from sqlalchemy import select

from app.billing import monthly
from app.models import Invoice
from app.models.credit_note import CreditNote
from tests.conftest import csrf_token_from, login
from tests.integration.usage_helpers import event, make_plan, run_deployment

pytestmark = pytest.mark.integration


@pytest.fixture
def overbilled(session, factory):
    """October billed 744 h of deployment `a` ($74.40); its `deleted` event for 2 October came late."""
    customer = factory.customer()
    make_plan(session)
    run_deployment(session, customer, "a", "vm-small", "2026-10-01T00:00:00")
    run_deployment(session, customer, "b", "vm-small", "2026-10-01T00:00:00", "2026-10-03T00:00:00")
    monthly.issue_monthly_invoices_bulk(session, "2026-10")
    event(session, customer, "a", "deleted", "2026-10-02T00:00:00")
    invoice = session.scalar(select(Invoice))
    assert invoice.total_cents == 7440 + 480
    return invoice


def test_recompute_usage_suggests_a_credit_note_for_hours_billed_too_high(app, session, overbilled):
    result = app.test_cli_runner().invoke(args=["recompute-usage", "--period", "2026-10"])
    assert "billed 2678400s 7440c, recomputed 86400s 240c" in result.output
    line = next(line for line in overbilled.lines if line.description == "a")
    assert f"credit note suggested: invoice {overbilled.number} customer {overbilled.customer_id}: a 720 h $72.00" in result.output
    assert f"line-{line.id}-hours=720" in result.output
    assert "credit notes suggested=1" in result.output
    session.expire_all()
    assert session.scalar(select(CreditNote)) is None  # read-only


def test_the_admin_page_prefills_a_credit_note_and_once_issued_nothing_is_suggested(client, session, factory,
                                                                                      overbilled):
    factory.admin()
    session.commit()
    login(client, "root@example.com", "admin-password-1")
    page = client.get("/admin/usage-corrections?period=2026-10").get_data(as_text=True)
    assert overbilled.number in page and "720 h of 744.00 h ($72.00)" in page
    link = unescape(re.search(r'href="([^"]+)"[^>]*id="prepare-credit-', page).group(1))
    form_page = client.get(link).get_data(as_text=True)
    line = next(line for line in overbilled.lines if line.description == "a")
    assert f'id="line-{line.id}-hours"' in form_page and 'value="720"' in form_page
    assert "Usage correction for 2026-10" in form_page
    key = re.search(r'name="request_key" type="hidden" value="([^"]+)"', form_page).group(1)
    response = client.post(f"/admin/invoices/{overbilled.id}/credit-notes", data={
        "csrf_token": csrf_token_from(form_page), "request_key": key, f"line-{line.id}-hours": "720",
        "credit_reason": "Usage correction for 2026-10"})
    assert response.status_code == 303, response.get_data(as_text=True)[:2000]
    session.expire_all()
    note = session.scalar(select(CreditNote))
    assert (note.total_cents, note.lines[0].seconds) == (7200, 720 * 3600)
    assert session.get(Invoice, overbilled.id).amount_due_cents == 7920 - 7200
    again = client.get("/admin/usage-corrections?period=2026-10").get_data(as_text=True)
    assert 'id="no-corrections"' in again


def test_a_bad_period_gets_a_message(client, session, factory):
    factory.admin()
    session.commit()
    login(client, "root@example.com", "admin-password-1")
    for period in ("2026-13", "nope", "9" * 500):
        response = client.get(f"/admin/usage-corrections?period={period}")
        assert response.status_code == 400 and 'id="usage-corrections-error"' in response.get_data(as_text=True)
