"""The links built once per app (app.web.site_links, app.web.id_url) are exactly what url_for
builds, under a script root too, and the frame shows each section link of a registered blueprint."""

import pytest
from flask import url_for

from app.web import ADMIN_NAV, CUSTOMER_NAV, id_url, site_links
from tests.conftest import login

pytestmark = pytest.mark.integration


def _id_endpoints(app):
    """Every customer endpoint whose only argument is an id."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("customer.") and len(rule.arguments) == 1:
            (name,) = rule.arguments
            if name.endswith("_id"):
                yield rule.endpoint, name


@pytest.mark.parametrize("script_root", ["", "/paydesk"])
def test_id_url_is_url_for(app, script_root):
    endpoints = list(_id_endpoints(app))
    assert ("customer.invoice_detail", "invoice_id") in endpoints
    with app.test_request_context("/", base_url=f"http://localhost{script_root}"):
        for endpoint, name in endpoints:
            for value in (1, 9, 10, 42, 2147483646, 2147483647):
                assert id_url(endpoint, **{name: value}) == url_for(endpoint, **{name: value}), (endpoint, value)


@pytest.mark.parametrize("script_root", ["", "/paydesk"])
def test_site_links_are_url_for(app, script_root):
    with app.test_request_context("/", base_url=f"http://localhost{script_root}"):
        links = site_links()
        assert links["paydesk_css"] == url_for("static", filename="paydesk.css")
        assert links["account"] == url_for("auth.account") and links["logout"] == url_for("auth.logout")
        for endpoint, label in CUSTOMER_NAV:
            assert f'<a href="{url_for(endpoint)}" id="nav-{endpoint.replace(".", "-")}">{label}</a>' in links["customer_nav"]
        for endpoint, label in ADMIN_NAV:
            if endpoint in app.view_functions:
                assert f'<a href="{url_for(endpoint)}" id="nav-{endpoint.replace(".", "-")}">{label}</a>' in links["admin_nav"]
        assert "/paydesk/" in links["index"] or not script_root


def test_the_frame_shows_the_customer_navigation(client, factory):
    factory.customer(email="nav@example.com")
    login(client, "nav@example.com")
    html = client.get("/invoices").get_data(as_text=True)
    for endpoint, label in CUSTOMER_NAV:
        assert f'id="nav-{endpoint.replace(".", "-")}">{label}</a>' in html
    assert 'id="nav-account"' in html and 'id="logout"' in html and "nav-admin-" not in html
