"""Every customer page fits a phone (360–414 px wide): nothing overflows horizontally.

The routes come from the URL map (GET routes of the customer-facing blueprints), so a page added
later is covered without touching this test; an id in a new route needs a value in ROUTE_VALUES
(the test fails until it has one)."""

import re

import pytest
from playwright.sync_api import expect

from app.billing.credit_notes import CreditLineInput, issue_credit_note
from app.billing.topups import credit_topup
from app.models.base import utcnow
from tests.browser.test_cards_browser import _login
from tests.integration.usage_helpers import add_card, make_plan, run_deployment
from tests.money_support import make_invoice

pytestmark = pytest.mark.browser
CUSTOMER_BLUEPRINTS = ("customer", "auth")
WIDTHS = (360, 390, 414)
PHONE_HEIGHT = 844


@pytest.fixture
def customer_world(session, factory):
    """A customer with something on every page: an invoice, a card, a top-up, a deployment."""
    customer = factory.customer(email="a.rather-long-address.for-a-phone@example-company.com")
    add_card(session, customer)
    invoice = make_invoice(session, customer.id, 12345, 678)
    note = issue_credit_note(session, invoice.id, [CreditLineInput(invoice.lines[1].id, 300)],
                             reason="A goodwill credit with a rather long reason for a small screen", request_key="phone")
    credit_topup(session, customer.id, payment_intent_id="pi_phone_layout_0001", amount_cents=2500)
    session.commit()
    plan = make_plan(session)
    run_deployment(session, customer, "dep-phone-with-a-long-name-0001", plan.name, utcnow().replace(day=1, hour=0))
    session.commit()
    return {"customer": customer, "invoice_id": invoice.id, "credit_note_id": note.id, "token": "not-a-real-reset-token"}


# how to fill each route argument from the fixtures; a route with an argument missing here fails the test
ROUTE_VALUES = {
    "invoice_id": lambda world: world["invoice_id"],
    "credit_note_id": lambda world: world["credit_note_id"],
    "token": lambda world: world["token"],
}


def customer_routes(app) -> list[tuple[str, str]]:
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] not in CUSTOMER_BLUEPRINTS or "GET" not in rule.methods:
            continue
        routes.append((rule.endpoint, sorted(rule.arguments)))
    return sorted(routes)


def _urls(app, world) -> list[tuple[str, str]]:
    from flask import url_for

    urls = []
    missing = []
    with app.test_request_context():
        for endpoint, arguments in customer_routes(app):
            if any(name not in ROUTE_VALUES for name in arguments):
                missing.append((endpoint, arguments))
                continue
            urls.append((endpoint, url_for(endpoint, **{name: ROUTE_VALUES[name](world) for name in arguments})))
    assert not missing, f"add values for these route arguments to ROUTE_VALUES: {missing}"
    return urls


_CULPRITS = """(width) => [...document.querySelectorAll('body *')]
    .filter(el => el.getBoundingClientRect().right > width)
    .slice(0, 3).map(el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : ''))"""


def _overflowing(context, app, world, width) -> list[str]:
    page = context.new_page()
    page.set_viewport_size({"width": width, "height": PHONE_HEIGHT})
    problems = []
    visited = 0
    for endpoint, url in _urls(app, world):
        head = context.request.get(url)
        if "text/html" not in head.headers.get("content-type", ""):
            continue  # a PDF or CSV download: no layout
        response = page.goto(url)
        assert response.status < 500, f"{endpoint} {url}: {response.status}"
        visited += 1
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        if scroll_width > width:
            culprits = page.evaluate(_CULPRITS, width)
            problems.append(f"{endpoint} ({url}) is {scroll_width}px wide at {width}px: {culprits}")
    page.close()
    assert visited >= 5
    return problems


def test_the_route_list_comes_from_the_url_map_and_covers_the_customer_pages(app):
    endpoints = {endpoint for endpoint, _ in customer_routes(app)}
    assert {"customer.dashboard", "customer.invoices", "customer.invoice_detail", "customer.cards",
            "customer.balance", "customer.deployments", "auth.login", "auth.signup"} <= endpoints


@pytest.mark.parametrize("width", WIDTHS)
def test_no_customer_page_overflows_a_phone_screen(browser, live_server, app, customer_world, width):
    anonymous = browser.new_context(base_url=live_server)
    signed_in = browser.new_context(base_url=live_server)
    try:
        problems = _overflowing(anonymous, app, customer_world, width)
        login_page = signed_in.new_page()
        _login(login_page, customer_world["customer"].email)
        login_page.close()
        problems += _overflowing(signed_in, app, customer_world, width)
    finally:
        anonymous.close()
        signed_in.close()
    assert problems == []


def test_the_navigation_collapses_into_a_menu_on_a_phone(page, customer_world):
    page.set_viewport_size({"width": 390, "height": PHONE_HEIGHT})
    _login(page, customer_world["customer"].email)
    expect(page.locator("#logout")).to_be_hidden()
    page.click("label[for=nav-toggle]")
    for selector in ("#nav-customer-balance", "#nav-customer-deployments", "#logout"):
        expect(page.locator(selector)).to_be_visible()
        box = page.locator(selector).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, selector
    page.click("#nav-customer-deployments")
    expect(page).to_have_url(re.compile(r"/deployments$"))
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_the_navigation_is_a_plain_row_on_a_wide_screen(page, customer_world):
    page.set_viewport_size({"width": 1280, "height": 800})
    _login(page, customer_world["customer"].email)
    expect(page.locator("label[for=nav-toggle]")).to_be_hidden()
    expect(page.locator("#nav-customer-balance")).to_be_visible()
    expect(page.locator("#logout")).to_be_visible()
