"""Browser: admin changes a plan's price and sees the history; customer sees deployments and month-to-date cost."""

from datetime import timedelta

import pytest

from app.models.base import utcnow
from tests.integration.usage_helpers import event, make_plan

pytestmark = pytest.mark.browser


def _login(page, email, password):
    page.goto("/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/*")


def test_admin_changes_a_price_and_sees_the_history(page, session, factory):
    factory.admin()
    make_plan(session, price="0.100000")
    _login(page, "root@example.com", "admin-password-1")
    page.goto("/admin/pricing")
    page.click("text=vm-small")
    page.fill("input[name=hourly_price]", "0.125000")
    page.click("#price-submit")  # review: how many customers will be told
    page.locator("#price-confirm-count").wait_for()
    page.click("#price-submit")  # confirm
    history = page.locator("#price-history")
    history.get_by_text("$0.125").wait_for()
    assert history.locator("tbody tr").count() == 2
    assert "$0.10" in history.inner_text()
    page.goto("/admin/pricing")
    assert page.locator("#plan-vm-small .plan-price").inner_text() == "$0.125"


def test_customer_sees_deployments_and_month_to_date_cost(page, session, factory):
    customer = factory.customer()
    make_plan(session, price="1.000000", since=utcnow() - timedelta(days=400))
    now = utcnow().replace(microsecond=0)
    month_start = now.replace(day=1, hour=0, minute=0, second=0)
    started = max(month_start, now - timedelta(hours=2))
    event(session, customer, "web-1", "created", started, plan="vm-small", name="web-1")
    event(session, customer, "web-1", "succeeded", started)
    event(session, customer, "web-1", "deleted", started + timedelta(hours=1) if now - started >= timedelta(hours=1)
          else now)
    expected_hours = min(1, (now - started).total_seconds() / 3600)
    _login(page, customer.email, "correct-horse-battery")
    page.goto("/deployments")
    row = page.locator("#deployments tbody tr").first
    assert "web-1" in row.inner_text() and "vm-small" in row.inner_text() and "deleted" in row.inner_text()
    assert row.locator(".month-to-date").inner_text() == f"${expected_hours:.2f}"
