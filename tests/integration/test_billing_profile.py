"""Billing profile (SPEC §2) and complete invoices (SPEC §7): the profile page validates every field at
once (VAT ID by format with python-stdnum, offline), invoices snapshot buyer and seller at issue and
never change afterwards, reverse charge, due dates on the page, PDF, dashboard and reminders."""

import io
from datetime import timedelta
from decimal import Decimal

import pytest
from pypdf import PdfReader
from sqlalchemy import select

from app.billing import monthly
from app.billing.invoices import InvoiceImmutable
from app.models import Invoice, User
from app.models.audit import AuditLog
from app.models.base import utcnow
from tests.conftest import get_csrf, login
from tests.integration.usage_helpers import make_plan, run_deployment
from tests.money_support import make_invoice

pytestmark = pytest.mark.integration

PROFILE = {"name": "Ada Lovelace", "company": "Analytical Engines GmbH", "address": "Hauptstraße 5\nHinterhaus",
           "postcode": "10115", "city": "Berlin", "country": "DE", "vat_id": "de 136 695 976"}


def _post_profile(client, **overrides):
    token = get_csrf(client, "/profile")
    return client.post("/profile", data={**PROFILE, **overrides, "csrf_token": token})


def _pdf_text(client, invoice_id: int) -> str:
    response = client.get(f"/invoices/{invoice_id}/pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(response.data)).pages)


def _usage_invoice(session, customer, period="2026-10", deployment="dep-1") -> Invoice:
    make_plan(session, price="1.000000")
    run_deployment(session, customer, deployment, "vm-small", f"{period}-01T00:00:00", f"{period}-01T10:00:00")
    return monthly.issue_customer_invoice(session, customer.id, period)


def test_profile_page_requires_login(client):
    assert client.get("/profile").status_code == 302
    assert client.post("/profile", data=PROFILE).status_code in (302, 400)


def test_profile_is_saved_with_the_vat_id_compact_and_audited(app, session, factory, client):
    customer = factory.customer()
    login(client, customer.email)
    page = client.get("/profile").get_data(as_text=True)
    assert '<option value="DE">Germany</option>' in page and '<option value="EU">' not in page

    response = _post_profile(client)
    assert response.status_code == 303
    session.expire_all()
    user = session.get(User, customer.id)
    assert (user.name, user.company, user.postcode, user.city, user.country, user.vat_id) == (
        "Ada Lovelace", "Analytical Engines GmbH", "10115", "Berlin", "DE", "DE136695976")
    assert user.address == "Hauptstraße 5\nHinterhaus"
    audit = session.scalar(select(AuditLog).where(AuditLog.action == "customer.billing_profile"))
    assert audit.actor_id == customer.id and audit.after["vat_id"] == "DE136695976"
    assert "Billing profile saved" in client.get("/profile").get_data(as_text=True)


@pytest.mark.parametrize(("vat_id", "country", "message"), [
    ("DE136695977", "DE", "its check digit does not match"),
    ("DE13669597", "DE", "wrong length for Germany"),
    ("136695976", "DE", "starting with its country prefix"),
    ("US123456789", "US", "starting with its country prefix"),
    ("FR40303265045", "DE", "This VAT ID is from France, but your country is Germany."),
    ("DE136695976", "", "Choose your country to go with the VAT ID."),
])
def test_a_bad_vat_id_gets_a_clear_message_and_nothing_is_written(app, session, factory, client, vat_id, country,
                                                                   message):
    customer = factory.customer()
    login(client, customer.email)
    response = _post_profile(client, vat_id=vat_id, country=country)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    session.expire_all()
    user = session.get(User, customer.id)
    assert user.vat_id is None and user.name is None


def test_every_bad_field_is_reported_at_once(app, session, factory, client):
    customer = factory.customer()
    login(client, customer.email)
    response = _post_profile(client, name="x" * 201, country="XX", postcode="1" * 21, city="Ber\nlin")
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "At most 200 characters." in html and "At most 20 characters." in html
    assert "Remove the control characters." in html
    assert "Choose a country from the list." in html
    session.expire_all()
    assert session.get(User, customer.id).name is None


def test_a_greek_vat_id_uses_the_el_prefix(app, session, factory, client):
    customer = factory.customer()
    login(client, customer.email)
    assert _post_profile(client, country="GR", vat_id="EL094259216").status_code == 303
    session.expire_all()
    assert session.get(User, customer.id).vat_id == "EL094259216"


def test_an_invoice_carries_the_profile_of_its_issue_and_never_changes(app, session, factory, client, monkeypatch):
    monkeypatch.setitem(app.config, "SELLER_NAME", "Paydesk Cloud GmbH")
    monkeypatch.setitem(app.config, "SELLER_ADDRESS", "1 Server Street; 10999 Berlin")
    monkeypatch.setitem(app.config, "SELLER_COUNTRY", "DE")
    monkeypatch.setitem(app.config, "SELLER_VAT_ID", "DE136695976")
    customer = factory.customer()
    login(client, customer.email)
    before = make_invoice(session, customer.id, 1000)
    _post_profile(client)
    after = make_invoice(session, customer.id, 2000)

    page = client.get(f"/invoices/{after.id}").get_data(as_text=True)
    pdf = _pdf_text(client, after.id)
    for text in ("Ada Lovelace", "Analytical Engines GmbH", "Hauptstraße 5", "10115 Berlin", "Germany",
                 "VAT ID DE136695976", "Paydesk Cloud GmbH", "1 Server Street", "10999 Berlin"):
        assert text in page, text
        assert text in pdf, text
    old_page = client.get(f"/invoices/{before.id}").get_data(as_text=True)
    assert "Ada Lovelace" not in old_page and "Ada Lovelace" not in _pdf_text(client, before.id)

    # the profile changes; the issued invoice does not, and the seller's configuration may change too
    _post_profile(client, name="Ada King", company="", city="Hamburg", postcode="20095")
    monkeypatch.setitem(app.config, "SELLER_NAME", "Someone Else Ltd")
    page = client.get(f"/invoices/{after.id}").get_data(as_text=True)
    pdf = _pdf_text(client, after.id)
    assert "Ada Lovelace" in pdf and "10115 Berlin" in pdf and "Paydesk Cloud GmbH" in pdf
    assert "Ada King" not in page and "Hamburg" not in pdf and "Someone Else" not in pdf

    session.expire_all()
    frozen = session.get(Invoice, after.id)
    frozen.buyer_city = "Hamburg"
    with pytest.raises(InvoiceImmutable):
        session.flush()
    session.rollback()


def test_invoice_page_and_pdf_carry_dates_lines_unit_prices_and_tax_per_rate(app, session, factory, client,
                                                                              monkeypatch):
    monkeypatch.setitem(app.config, "VAT_COUNTRY_RATES", "DE=0.19")
    customer = factory.customer(country="DE")
    login(client, customer.email)
    invoice = _usage_invoice(session, customer)
    assert invoice.tax_rate == Decimal("0.19") and not invoice.reverse_charge
    issued = invoice.issued_at
    due = (issued + timedelta(days=14)).strftime("%Y-%m-%d")
    page = client.get(f"/invoices/{invoice.id}").get_data(as_text=True)
    pdf = _pdf_text(client, invoice.id)
    for text in (invoice.number, issued.strftime("%Y-%m-%d"), "2026-10-01 – 2026-10-31", due,
                 "10.00 h", "$1.00 / h", "$10.00", "VAT 19% on $10.00", "$1.90", "$11.90"):
        assert text in page, text
        assert text in pdf, text
    assert f'<td id="invoice-due-date">{due}</td>' in page


@pytest.mark.parametrize("path", ["bulk", "per_customer"])
def test_reverse_charge_for_a_business_in_another_eu_country_on_both_invoicing_paths(app, session, factory, client,
                                                                                    monkeypatch, path):
    monkeypatch.setitem(app.config, "REVERSE_CHARGE", True)
    monkeypatch.setitem(app.config, "SELLER_COUNTRY", "DE")
    monkeypatch.setitem(app.config, "VAT_COUNTRY_RATES", "DE=0.19,FR=0.20")
    monkeypatch.setitem(app.config, "VAT_RATE", "0.10")
    french_business = factory.customer("fr-b2b@example.com", country="FR", vat_id="FR40303265045",
                                       company="Société Exemple")
    french_consumer = factory.customer("fr-b2c@example.com", country="FR")
    german_business = factory.customer("de-b2b@example.com", country="DE", vat_id="DE136695976")
    swiss_business = factory.customer("ch-b2b@example.com", country="CH", vat_id="CHE-123.456.788")
    make_plan(session, price="1.000000")
    for n, customer in enumerate((french_business, french_consumer, german_business, swiss_business)):
        run_deployment(session, customer, f"dep-{n}", "vm-small", "2026-10-01T00:00:00", "2026-10-01T10:00:00")
    if path == "bulk":
        monthly.issue_monthly_invoices_bulk(session, "2026-10")
    else:
        monthly.issue_monthly_invoices_per_customer(session, "2026-10")
    session.expire_all()

    def invoice_of(customer):
        return session.scalar(select(Invoice).where(Invoice.customer_id == customer.id))

    rc = invoice_of(french_business)
    assert (rc.reverse_charge, rc.tax_rate, rc.tax_cents, rc.total_cents) == (True, Decimal("0"), 0, 1000)
    assert (rc.buyer_vat_id, rc.seller_country) == ("FR40303265045", "DE")
    assert invoice_of(french_consumer).tax_rate == Decimal("0.20") and not invoice_of(french_consumer).reverse_charge
    assert invoice_of(german_business).tax_rate == Decimal("0.19") and not invoice_of(german_business).reverse_charge
    assert invoice_of(swiss_business).tax_rate == Decimal("0.10") and not invoice_of(swiss_business).reverse_charge
    assert invoice_of(german_business).due_at == invoice_of(german_business).issued_at + timedelta(days=14)

    login(client, french_business.email)
    page = client.get(f"/invoices/{rc.id}").get_data(as_text=True)
    pdf = _pdf_text(client, rc.id)
    for text in ("VAT 0% (reverse charge)", "Reverse charge: VAT is to be accounted for by the recipient",
                 "VAT ID FR40303265045", "Société Exemple"):
        assert text in page, text
        assert text in pdf, text


def test_without_the_switch_a_vat_id_changes_nothing(app, session, factory, monkeypatch):
    monkeypatch.setitem(app.config, "SELLER_COUNTRY", "DE")
    monkeypatch.setitem(app.config, "VAT_COUNTRY_RATES", "FR=0.20")
    customer = factory.customer(country="FR", vat_id="FR40303265045")
    invoice = _usage_invoice(session, customer)
    assert invoice.tax_rate == Decimal("0.20") and not invoice.reverse_charge


def test_due_date_follows_payment_terms_and_the_dashboard_warns_only_when_overdue(app, session, factory, client,
                                                                                   monkeypatch):
    monkeypatch.setitem(app.config, "PAYMENT_TERMS_DAYS", 30)
    customer = factory.customer()
    login(client, customer.email)
    fresh = make_invoice(session, customer.id, 1500)
    assert fresh.due_at == fresh.issued_at + timedelta(days=30)
    due = fresh.due_at.strftime("%Y-%m-%d")
    dashboard = client.get("/dashboard").get_data(as_text=True)
    assert f'<strong id="dunning-due-date">{due}</strong>' in dashboard
    assert "will be deleted" not in dashboard and 'id="dunning-deletion-at"' not in dashboard
    assert due in client.get("/invoices").get_data(as_text=True)
    assert due in client.get(f"/invoices/{fresh.id}").get_data(as_text=True)
    assert due in _pdf_text(client, fresh.id)

    old_issue = utcnow() - timedelta(days=40)
    overdue = make_invoice(session, customer.id, 2500, now=old_issue)
    overdue_due = (old_issue + timedelta(days=30)).strftime("%Y-%m-%d")
    dashboard = client.get("/dashboard").get_data(as_text=True)
    assert f'<span id="dunning-overdue">{overdue.number}</span>' in dashboard
    assert f'<strong id="dunning-overdue-due-date">{overdue_due}</strong>' in dashboard
    deletion = (old_issue + timedelta(days=92)).strftime("%Y-%m-%d")
    assert f'<strong id="dunning-deletion-at">{deletion}</strong>' in dashboard


def test_reminder_lists_each_invoice_with_its_due_date(app, session, factory, worker, mailbox):
    from app.models import SettlementRequest
    from jobs.dunning import run_dunning

    customer = factory.customer()
    issued = utcnow() - timedelta(days=20)
    invoice = make_invoice(session, customer.id, 4200, now=issued)
    session.query(SettlementRequest).delete()
    session.commit()
    run_dunning()
    worker.run_burst()
    mailbox.wait_for(1)
    # the reminder (the invoice-issued notification went out too)
    [message] = [m for m in mailbox.messages if m["Message-ID"].startswith("<dunning-")]
    text = message.get_body(("plain",)).get_content()
    due = invoice.due_at.strftime("%Y-%m-%d")
    assert f"Invoice {invoice.number}" in text and f"since {due}" in text
    assert due in message.get_body(("html",)).get_content()
    assert "marked for deletion on" in text
