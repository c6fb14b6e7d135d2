"""The rough edges of issue 12 (item 7), each through HTTP, the CLI or the service it lives in."""

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.billing import vouchers as v
from app.models import AuditLog, User
from app.models.base import utcnow
from app.models.usage import PlanPrice
from app.models.voucher import Voucher
from tests.conftest import get_csrf, login
from tests.integration.usage_helpers import make_plan
from tests.money_support import make_invoice

pytestmark = pytest.mark.integration
ADMIN_PASSWORD = "admin-password-1"


@pytest.fixture
def admin_client(client, factory, session):
    factory.admin()
    session.commit()
    login(client, "root@example.com", ADMIN_PASSWORD)
    return client


def _errors(html: str) -> list[str]:
    return re.findall(r'class="field-error[^"]*"[^>]*>([^<]+)<', html)


# ------------------------------------------------------------- "None" placeholders ---
def test_no_form_field_renders_none_as_an_attribute(admin_client, client, session, factory):
    customer = factory.customer()
    invoice = make_invoice(session, customer.id, 1000)
    pages = [f"/admin/customers/{customer.id}", f"/admin/invoices/{invoice.id}", "/admin/invoices",
             "/admin/vouchers", f"/admin/refunds?customer_id={customer.id}", "/admin/pricing"]
    for path in pages:
        html = admin_client.get(path).get_data(as_text=True)
        assert '="None"' not in html, path
    admin_client.post("/logout", data={"csrf_token": get_csrf(admin_client, "/admin/invoices")})
    for path in ("/login", "/signup", "/password/forgot"):
        html = client.get(path).get_data(as_text=True)
        assert '="None"' not in html and 'placeholder="None"' not in html, path
        assert "<input" in html


# ------------------------------------------------------------ every error at once ---
def test_sign_up_shows_every_fields_error_at_once(client):
    token = get_csrf(client, "/signup")
    response = client.post("/signup", data={"csrf_token": token, "email": "not-an-email", "password": "short",
                                            "confirm": "other"})
    errors = _errors(response.get_data(as_text=True))
    assert "Enter a valid email address." in errors
    assert any("at least" in e for e in errors)
    assert "Passwords do not match." in errors


def test_sign_up_names_a_weak_password_even_when_the_email_is_wrong_too(client):
    token = get_csrf(client, "/signup")
    response = client.post("/signup", data={"csrf_token": token, "email": "not-an-email",
                                            "password": "password1234", "confirm": "password1234"})
    errors = _errors(response.get_data(as_text=True))
    assert "Enter a valid email address." in errors
    assert any(e.startswith("This password is too easy to guess.") for e in errors), errors


def test_the_refund_and_bank_transfer_forms_show_every_fields_error_at_once(admin_client, session, factory):
    customer = factory.customer()
    invoice = make_invoice(session, customer.id, 1000)
    token = get_csrf(admin_client, f"/admin/refunds?customer_id={customer.id}")
    response = admin_client.post(f"/admin/refunds/{customer.id}", data={"csrf_token": token, "amount": "12abc",
                                                                        "reason": ""})
    errors = _errors(response.get_data(as_text=True))
    assert response.status_code == 400 and len(errors) == 2, errors
    response = admin_client.post(f"/admin/invoices/{invoice.id}/bank-transfer",
                                 data={"csrf_token": token, "amount": "12abc", "reference": "r" * 201})
    errors = _errors(response.get_data(as_text=True))
    assert response.status_code == 400 and len(errors) == 2, errors
    session.expire_all()
    assert session.get(type(invoice), invoice.id).paid_cents == 0


def test_the_adjustment_form_shows_the_amount_and_the_reason_errors_together(admin_client, factory):
    customer = factory.customer()
    token = get_csrf(admin_client, f"/admin/customers/{customer.id}")
    response = admin_client.post(f"/admin/customers/{customer.id}/adjust",
                                 data={"csrf_token": token, "amount": "12abc", "reason": ""})
    assert response.status_code == 400
    errors = _errors(response.get_data(as_text=True))
    assert "Give a reason." in errors and any("amount" in e.lower() for e in errors), errors


def test_the_voucher_form_shows_the_value_and_the_count_errors_together(admin_client, session):
    token = get_csrf(admin_client, "/admin/vouchers")
    response = admin_client.post("/admin/vouchers", data={"csrf_token": token, "count": "0", "value": "abc",
                                                          "max_redemptions": "1"})
    assert response.status_code == 400
    errors = _errors(response.get_data(as_text=True))
    assert any(e.startswith("Between 1 and") for e in errors) and any("amount" in e.lower() for e in errors), errors
    assert session.scalars(select(Voucher)).all() == []


def test_the_price_form_shows_the_price_and_the_date_errors_together(admin_client, session):
    plan = make_plan(session)
    token = get_csrf(admin_client, f"/admin/pricing/{plan.id}")
    response = admin_client.post(f"/admin/pricing/{plan.id}/price",
                                 data={"csrf_token": token, "hourly_price": "x", "effective_at": "tomorrow"})
    assert response.status_code == 422
    errors = _errors(response.get_data(as_text=True))
    assert "Effective time must look like 2026-11-01T00:00 (UTC)." in errors and len(errors) == 2, errors


# ----------------------------------------------------- admin figures after adjusting ---
def test_an_htmx_adjustment_refreshes_the_figures_out_of_band(admin_client, session, factory):
    customer = factory.customer()
    token = get_csrf(admin_client, f"/admin/customers/{customer.id}")
    response = admin_client.post(
        f"/admin/customers/{customer.id}/adjust",
        data={"amount": "5.00", "reason": "goodwill", "request_key": "oob-1"},
        headers={"HX-Request": "true", "X-CSRFToken": token},
    )
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert '<section id="adjustment-panel">' in html and "<html" not in html
    figures = re.search(r'<section class="figures" id="customer-figures" hx-swap-oob="true">(.*?)</section>', html, re.S)
    assert figures and 'id="customer-cash">$5.00<' in figures.group(1)
    assert "Adjusted the cash balance of" in html and "by $5.00" in html  # the flash, out of band too
    assert re.search(r'name="amount"[^>]*value="5.00"', html) is None  # a fresh form
    session.expire_all()
    assert session.get(User, customer.id).cash_balance_cents == 500


# ------------------------------------------------------------------- refunds links ---
def test_refunds_are_linked_from_the_navigation_and_the_customer_page(admin_client, factory):
    customer = factory.customer()
    html = admin_client.get(f"/admin/customers/{customer.id}").get_data(as_text=True)
    assert 'id="nav-admin-refunds" ' in html or 'id="nav-admin-refunds">' in html
    assert f'href="/admin/refunds?customer_id={customer.id}" id="refund-link"' in html
    page = admin_client.get(f"/admin/refunds?customer_id={customer.id}").get_data(as_text=True)
    assert customer.email in page and 'id="refund-form"' in page


# ------------------------------------------------------ issuing invoices by hand ---
def test_invoices_are_issued_from_the_admin_invoices_page_not_pricing(admin_client, factory):
    factory.customer("dora@example.com")
    invoices_page = admin_client.get("/admin/invoices").get_data(as_text=True)
    assert 'action="/admin/invoices/issue" id="usage-invoice-form"' in invoices_page
    assert "usage-invoice-form" not in admin_client.get("/admin/pricing").get_data(as_text=True)
    token = get_csrf(admin_client, "/admin/invoices")
    response = admin_client.post("/admin/invoices/issue", data={"csrf_token": token, "customer_email": "nobody@example.com",
                                                                "period": "2026-13x"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert '<details id="issue-invoice" open>' in html and "Use YYYY-MM." in _errors(html)


# ---------------------------------------------------------- inclusive voucher dates ---
def test_a_voucher_valid_until_a_day_is_listed_with_that_day_inclusive(admin_client, session):
    last_day = (utcnow() + timedelta(days=40)).date()
    token = get_csrf(admin_client, "/admin/vouchers")
    created = admin_client.post("/admin/vouchers", data={
        "csrf_token": token, "count": "1", "value": "10.00", "max_redemptions": "1",
        "valid_until": last_day.isoformat(), "request_key": "inclusive-1"})
    assert created.status_code == 201
    assert f"valid until {last_day.isoformat()} (inclusive)" in created.get_data(as_text=True)
    listing = admin_client.get("/admin/vouchers").get_data(as_text=True)
    assert f'<td class="voucher-valid-until">{last_day.isoformat()} (inclusive)</td>' in listing
    stored = session.scalar(select(Voucher))
    assert stored.expires_at.date() == last_day + timedelta(days=1)  # still redeemable all of that day


# --------------------------------------------------------------- prices in flashes ---
def test_a_price_change_flash_formats_the_price_with_babel(admin_client, session):
    plan = make_plan(session)
    token = get_csrf(admin_client, f"/admin/pricing/{plan.id}")
    response = admin_client.post(f"/admin/pricing/{plan.id}/price",
                                 data={"csrf_token": token, "hourly_price": "0.02", "confirmed": "yes"})
    assert response.status_code == 303
    html = admin_client.get(response.headers["Location"]).get_data(as_text=True)
    assert f"{plan.name}: $0.02 per hour from" in html and "0.020000" not in html


# ----------------------------------------------------- cancelling a scheduled price ---
def test_a_scheduled_price_can_be_cancelled_before_it_takes_effect_and_it_is_audited(admin_client, session):
    plan = make_plan(session, price="0.100000")
    token = get_csrf(admin_client, f"/admin/pricing/{plan.id}")
    when = (utcnow() + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M")
    admin_client.post(f"/admin/pricing/{plan.id}/price",
                      data={"csrf_token": token, "hourly_price": "0.125", "effective_at": when, "confirmed": "yes"})
    scheduled = session.scalar(select(PlanPrice).where(PlanPrice.plan_id == plan.id, PlanPrice.effective_at > utcnow()))
    page = admin_client.get(f"/admin/pricing/{plan.id}").get_data(as_text=True)
    assert f'id="cancel-price-{scheduled.id}"' in page

    response = admin_client.post(f"/admin/pricing/{plan.id}/prices/{scheduled.id}/cancel",
                                 headers={"HX-Request": "true", "X-CSRFToken": token})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "the price of $0.125 per hour scheduled for" in html and "was cancelled" in html
    session.expire_all()
    prices = session.scalars(select(PlanPrice).where(PlanPrice.plan_id == plan.id)).all()
    assert [str(p.hourly_price) for p in prices] == ["0.100000"]
    audit = session.scalar(select(AuditLog).where(AuditLog.action == "plan.price_cancel"))
    assert audit.before["hourly_price"] == "0.125000" and audit.after == {"cancelled": True}

    [current] = prices
    refused = admin_client.post(f"/admin/pricing/{plan.id}/prices/{current.id}/cancel", data={"csrf_token": token})
    assert refused.status_code == 303
    assert "already in effect" in admin_client.get(f"/admin/pricing/{plan.id}").get_data(as_text=True)
    session.expire_all()
    assert session.get(PlanPrice, current.id) is not None
    other = make_plan(session, size="medium")
    assert admin_client.post(f"/admin/pricing/{other.id}/prices/{current.id}/cancel",
                             data={"csrf_token": token}).status_code == 303  # not that plan's: refused
    session.expire_all()
    assert session.get(PlanPrice, current.id) is not None


# ------------------------------------------------------------------ the demo voucher ---
def test_the_demo_voucher_is_printed_as_stored_and_listed(admin_client, session):
    from app.demo import seed_demo

    printed = next(line for line in seed_demo(session) if line.startswith("voucher: ")).removeprefix("voucher: ")
    assert printed == v.format_code(v.normalise_code(printed))  # typed back, it is what is stored
    voucher = session.scalar(select(Voucher))
    assert printed.startswith(voucher.code_prefix + "-")
    assert f"<code>{voucher.code_prefix}-…</code>" in admin_client.get("/admin/vouchers").get_data(as_text=True)


# ----------------------------------------------------------------- flask create-admin ---
def test_create_admin_refuses_an_email_the_login_form_refuses(app, session, client):
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["create-admin", "--email", "ops@paydesk.test", "--password", "long-enough-pass"])
    assert refused.exit_code != 0 and "cannot log in" in refused.output
    refused = runner.invoke(args=["create-admin", "--email", "not an email", "--password", "long-enough-pass"])
    assert refused.exit_code != 0 and "Enter a valid email address." in refused.output
    session.expire_all()
    assert session.scalars(select(User)).all() == []

    created = runner.invoke(args=["create-admin", "--email", "ops@example.com", "--password", "long-enough-pass"])
    assert created.exit_code == 0, created.output
    login(client, "ops@example.com", "long-enough-pass")
