"""Every route of the URL map answers with the security headers (ASVS V3.4, V14.4), whoever asks
and whatever the status: anonymous, customer and admin, GET and POST, over HTTP and HTTPS."""

import pytest

from tests.conftest import login
from tests.money_support import make_invoice

pytestmark = pytest.mark.integration


def _routes(app):
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def _url(rule, values: dict) -> str:
    args = {}
    for name in rule.arguments:
        args[name] = values.get(name, 1)
    from flask import url_for

    return url_for(rule.endpoint, **args)


def assert_security_headers(response, *, https: bool, what: str):
    headers = response.headers
    csp = headers.get("Content-Security-Policy", "")
    directives = {part.split()[0]: part.split()[1:] for part in csp.split(";") if part.strip()}
    assert directives.get("default-src") == ["'self'"], what
    assert directives.get("script-src") == ["'self'"], what
    assert directives.get("style-src") == ["'self'"], what
    assert directives.get("frame-ancestors") == ["'none'"], what
    assert directives.get("object-src") == ["'none'"], what
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp, what
    assert headers.get("X-Frame-Options") == "DENY", what
    assert headers.get("X-Content-Type-Options") == "nosniff", what
    assert headers.get("Referrer-Policy") == "same-origin", what
    if https:
        assert headers.get("Strict-Transport-Security", "").startswith("max-age=31536000"), what
    else:
        assert "Strict-Transport-Security" not in headers, what
    if not what.split()[1].startswith("/static/"):
        assert headers.get("Cache-Control") == "no-store", what


@pytest.fixture
def walk(app, session, factory):
    customer = factory.customer(email="walker@example.com")
    factory.admin(email="boss@example.com", password="boss-password-long-1")
    invoice = make_invoice(session, customer.id, 1234)
    values = {
        "invoice_id": invoice.id, "customer_id": customer.id, "raw_customer_id": str(customer.id),
        "token": "not-a-token", "filename": "paydesk.css",
    }

    def run(client, *, https: bool, who: str):
        seen = 0
        base_url = "https://localhost" if https else "http://localhost"
        with app.test_request_context():
            targets = [(rule, method, _url(rule, values)) for rule, method in _routes(app)]
        for _rule, method, url in targets:
            response = client.open(url, method=method, base_url=base_url)
            what = f"{method} {url} as {who} ({response.status_code})"
            assert response.status_code < 500, what
            assert_security_headers(response, https=https, what=what)
            response.close()
            seen += 1
        return seen

    return run


def test_every_route_sends_the_security_headers_to_anonymous_visitors(app, walk, stripe):
    seen = walk(app.test_client(), https=False, who="anonymous")
    assert seen >= 50


def test_every_route_sends_hsts_and_the_rest_over_https(app, walk, stripe):
    walk(app.test_client(), https=True, who="anonymous over https")


def test_every_route_sends_the_security_headers_to_a_customer(app, walk, stripe):
    client = app.test_client()
    login(client, "walker@example.com")
    walk(client, https=False, who="customer")
    # the walk posted without CSRF tokens: the customer is still logged in, nothing was changed
    assert client.get("/dashboard").status_code == 200


def test_every_route_sends_the_security_headers_to_an_admin(app, walk, stripe):
    client = app.test_client()
    login(client, "boss@example.com", "boss-password-long-1")
    walk(client, https=False, who="admin")


def test_invoice_pdfs_and_csv_exports_are_never_cached(app, client, session, factory, walk):
    customer = factory.customer(email="pdf@example.com")
    invoice = make_invoice(session, customer.id, 500)
    login(client, "pdf@example.com")
    pdf = client.get(f"/invoices/{invoice.id}/pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert pdf.headers["Cache-Control"] == "no-store"
    admin = app.test_client()
    login(admin, "boss@example.com", "boss-password-long-1")
    export = admin.get("/admin/invoices.csv")
    assert export.status_code == 200 and export.mimetype == "text/csv"
    assert export.headers["Cache-Control"] == "no-store"
    assert admin.get(f"/admin/invoices/{invoice.id}/pdf").headers["Cache-Control"] == "no-store"


def test_the_login_page_contains_no_inline_script_or_style(client):
    html = client.get("/login").get_data(as_text=True)
    assert "<script>" not in html and "<style" not in html and " style=" not in html
    assert '"includeIndicatorStyles": false' in html
