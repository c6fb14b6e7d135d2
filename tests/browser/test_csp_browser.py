"""The main customer and admin pages load in Chromium under the strict CSP without a single
violation: no inline script or style, no HTMX-injected style, nothing from elsewhere."""

import re

import pytest
from playwright.sync_api import expect

from tests.money_support import make_invoice

pytestmark = pytest.mark.browser

RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline') + ' ' + (e.sourceFile || ''));
});
"""


def _watch(page):
    console = []
    page.on("console", lambda msg: console.append(msg.text))
    page.add_init_script(RECORD_VIOLATIONS)
    return console


def _visit(page, console, path):
    page.goto(path)
    page.wait_for_load_state("load")
    violations = page.evaluate("() => window.__cspViolations")
    csp_messages = [m for m in console if "Content Security Policy" in m or "Content-Security-Policy" in m]
    assert violations == [] and csp_messages == [], f"{path}: {violations} {csp_messages}"


def _log_in(page, email, password):
    page.goto("/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#login-submit")


def _pages(app, prefix_admin: bool) -> list[str]:
    """Every GET page without URL arguments: the customer's or the admin's (from the URL map)."""
    skip = ("/api/", "/stripe/", "/static/", "/healthz")
    paths = []
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.arguments or rule.rule.startswith(skip) or rule.rule.endswith(".csv"):
            continue
        if rule.rule.startswith("/admin") == prefix_admin and rule.rule not in ("/", "/login", "/signup", "/password/forgot"):
            paths.append(rule.rule)
    return sorted(paths)


def test_customer_and_admin_pages_report_no_csp_violation(app, page, browser, live_server, session, factory):
    customer = factory.customer(email="csp@example.com", name="Csp Customer")
    invoice = make_invoice(session, customer.id, 1999)
    factory.admin(email="boss@example.com", password="boss-password-long-1")

    console = _watch(page)
    for path in ("/login", "/signup", "/password/forgot"):
        _visit(page, console, path)

    _log_in(page, "csp@example.com", "correct-horse-battery")
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    customer_pages = _pages(app, prefix_admin=False)
    assert {"/dashboard", "/invoices", "/cards", "/balance", "/account"} <= set(customer_pages)
    for path in [*customer_pages, f"/invoices/{invoice.id}"]:
        _visit(page, console, path)
    # an HTMX swap (the invoice filter) under the same policy
    page.goto("/invoices")
    page.select_option("select[name=state]", "open")
    expect(page).to_have_url(re.compile(r"state=open"))
    _visit(page, console, page.url.split(live_server, 1)[1])

    context = browser.new_context(base_url=live_server)
    try:
        admin = context.new_page()
        admin_console = _watch(admin)
        _log_in(admin, "boss@example.com", "boss-password-long-1")
        expect(admin).to_have_url(re.compile(r"/admin/$"))
        admin_pages = _pages(app, prefix_admin=True)
        assert {"/admin/", "/admin/invoices", "/admin/customers", "/admin/vouchers", "/admin/pricing"} <= set(admin_pages)
        for path in [*admin_pages, f"/admin/invoices/{invoice.id}", f"/admin/customers/{customer.id}"]:
            _visit(admin, admin_console, path)
        admin.goto("/admin/customers")
        admin.fill("#customer-search", "csp@")
        expect(admin.locator(".customer-row")).to_have_count(1)
        violations = admin.evaluate("() => window.__cspViolations")
        assert violations == [] and not [m for m in admin_console if "Content Security Policy" in m]
    finally:
        context.close()
