"""An admin places and lifts a hold from the customer page (HTMX), in a real browser."""

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.models import User
from app.models.audit import AuditLog

pytestmark = pytest.mark.browser


def test_admin_places_and_lifts_a_hold_on_the_customer_page(page, session, factory):
    customer = factory.customer(email="held@example.com")
    admin = factory.admin()
    session.commit()
    page.goto("/login")
    page.fill("#email", admin.email)
    page.fill("#password", "admin-password-1")
    page.click("#login-submit")
    expect(page).not_to_have_url(re.compile(r"/login$"))

    page.goto(f"/admin/customers/{customer.id}")
    page.fill("#hold-reason", "Chargeback under review")
    page.click("#place-hold")
    expect(page.locator("#dunning-hold")).to_contain_text("On hold")
    expect(page.locator("#dunning-hold")).to_contain_text("Chargeback under review")
    session.expire_all()
    assert session.get(User, customer.id).on_hold is True

    page.click("#lift-hold")
    expect(page.locator("#dunning-hold")).to_contain_text("Not on hold")
    session.expire_all()
    assert session.get(User, customer.id).on_hold is False
    assert [e.action for e in session.scalars(select(AuditLog).order_by(AuditLog.id))] == [
        "customer.hold", "customer.lift_hold"]
