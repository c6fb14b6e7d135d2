"""Customer invoice pages: ownership (404), login required, PDF content, pay now, dashboard panel."""

import io

import pytest
from pypdf import PdfReader

from app.models import Invoice, SettlementRequest
from tests.conftest import get_csrf, login
from tests.money_support import credit, make_invoice

pytestmark = pytest.mark.integration

CUSTOMER_ROUTES = [
    ("get", "/invoices"),
    ("get", "/invoices/{id}"),
    ("get", "/invoices/{id}/status"),
    ("get", "/invoices/{id}/pdf"),
    ("post", "/invoices/{id}/pay"),
]
ADMIN_ROUTES = [
    ("get", "/admin/invoices"),
    ("get", "/admin/invoices.csv"),
    ("get", "/admin/invoices/{id}"),
    ("get", "/admin/invoices/{id}/pdf"),
    ("post", "/admin/invoices/{id}/void"),
    ("post", "/admin/invoices/{id}/bank-transfer"),
    ("get", "/admin/customers"),
    ("get", "/admin/customers/{customer}"),
    ("post", "/admin/customers/{customer}/adjust"),
]


@pytest.fixture
def owner_and_invoice(session, factory):
    owner = factory.customer("owner@example.com")
    invoice = make_invoice(session, owner.id, 4321)
    return owner, invoice


@pytest.mark.parametrize(("method", "path"), CUSTOMER_ROUTES)
def test_customer_invoice_routes_require_login(client, owner_and_invoice, method, path):
    _, invoice = owner_and_invoice
    response = getattr(client, method)(path.format(id=invoice.id))
    assert response.status_code in (302, 401, 400)
    if method == "get":
        assert response.status_code == 302 and "/login" in response.headers["Location"]


@pytest.mark.parametrize(("method", "path"), CUSTOMER_ROUTES[1:])
def test_another_customers_invoice_is_not_found(client, factory, owner_and_invoice, method, path):
    _, invoice = owner_and_invoice
    factory.customer("intruder@example.com")
    login(client, "intruder@example.com")
    token = get_csrf(client, "/dashboard")
    response = getattr(client, method)(path.format(id=invoice.id), headers={"X-CSRFToken": token})
    assert response.status_code == 404


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_invoice_and_customer_routes_are_forbidden_to_customers(client, owner_and_invoice, method, path):
    owner, invoice = owner_and_invoice
    login(client, "owner@example.com")
    token = get_csrf(client, "/dashboard")
    response = getattr(client, method)(path.format(id=invoice.id, customer=owner.id), headers={"X-CSRFToken": token})
    assert response.status_code == 403


def test_the_pdf_contains_the_invoice_number_and_total(client, owner_and_invoice):
    _, invoice = owner_and_invoice
    login(client, "owner@example.com")
    response = client.get(f"/invoices/{invoice.id}/pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(response.data)).pages)
    assert invoice.number in text
    assert "$43.21" in text


def test_invoice_list_filters_by_state_and_shows_formatted_amounts(client, session, owner_and_invoice):
    owner, invoice = owner_and_invoice
    paid = make_invoice(session, owner.id, 100)
    credit(session, owner.id, "cash", 100)
    from app.billing.settlement import settle_customer

    settle_customer(session, owner.id)
    login(client, "owner@example.com")
    html = client.get("/invoices?state=open").get_data(as_text=True)
    assert invoice.number in html and paid.number not in html and "$43.21" in html
    html = client.get("/invoices?state=paid").get_data(as_text=True)
    assert paid.number in html and invoice.number not in html
    dashboard = client.get("/dashboard").get_data(as_text=True)
    assert 'id="open-invoices-panel"' in dashboard and invoice.number in dashboard


def test_pay_now_requests_settlement_and_the_status_fragment_polls(client, session, owner_and_invoice):
    owner, invoice = owner_and_invoice
    session.query(SettlementRequest).delete()
    session.commit()
    login(client, "owner@example.com")
    token = get_csrf(client, f"/invoices/{invoice.id}")
    response = client.post(f"/invoices/{invoice.id}/pay", headers={"X-CSRFToken": token, "HX-Request": "true"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'hx-trigger="every 1s"' in html and 'id="invoice-status"' in html
    assert session.get(SettlementRequest, owner.id) is not None
    session.expire_all()
    assert session.get(Invoice, invoice.id).state == "open"
