"""Voucher pages over HTTP: admin create/list/disable/CSV, the customer's HTMX redeem panel, and
the failed-attempt throttle (Redis-backed Flask-Limiter storage)."""

import base64
import csv
import html
import io
import re

import pytest
from sqlalchemy import func, select

from app.billing import vouchers as v
from app.models import AuditLog, LedgerEntry, User
from app.models.voucher import Voucher, VoucherRedemption
from tests.conftest import get_csrf, login

pytestmark = pytest.mark.integration
ADMIN_PASSWORD = "admin-password-1"


def new_code(session, **kwargs) -> str:
    args = {"count": 1, "value_cents": 2500, "max_redemptions": 1, "expires_at": None, "note": None}
    args.update(kwargs)
    created = v.create_voucher_batch(session, actor_id=None, request_key=f"t-{v.generate_code()}", **args)
    return created.codes[0][1]


def htmx_headers(client, path="/dashboard"):
    return {"HX-Request": "true", "X-CSRFToken": get_csrf(client, path)}


def redeem(client, code, headers):
    return client.post("/vouchers/redeem", data={"code": code}, headers=headers)


def credited(session, customer_id):
    session.expire_all()
    return (
        session.get(User, customer_id).voucher_balance_cents,
        session.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.customer_id == customer_id)),
        session.scalar(
            select(func.count()).select_from(VoucherRedemption).where(VoucherRedemption.customer_id == customer_id)
        ),
    )


# ------------------------------------------------------------------- admin ---
def test_admin_creates_a_batch_sees_the_codes_once_and_can_download_them_as_csv(client, session, factory):
    admin = factory.admin()
    login(client, admin.email, ADMIN_PASSWORD)
    page = client.get("/admin/vouchers").get_data(as_text=True)
    request_key = re.search(r'name="request_key"[^>]*value="([^"]+)"', page).group(1)
    form = {
        "csrf_token": get_csrf(client, "/admin/vouchers"), "count": "3", "value": "25.00", "max_redemptions": "2",
        "valid_until": "2099-12-31", "note": "Meetup", "request_key": request_key,
    }

    response = client.post("/admin/vouchers", data=form)

    assert response.status_code == 201
    body = response.get_data(as_text=True)
    codes = re.findall(r'class="voucher-code"[^>]*>([0-9A-Z-]+)<', body)
    assert len(codes) == 3
    csv_url = html.unescape(re.search(r'href="(data:text/csv[^"]+)"', body).group(1))
    rows = list(csv.DictReader(io.StringIO(base64.b64decode(csv_url.split(",", 1)[1]).decode())))
    assert sorted(r["code"] for r in rows) == sorted(codes)
    vouchers = session.scalars(select(Voucher)).all()
    assert len(vouchers) == 3
    assert {(x.value_cents, x.max_redemptions, x.note) for x in vouchers} == {(2500, 2, "Meetup")}
    assert {x.expires_at.isoformat() for x in vouchers} == {"2100-01-01T00:00:00+00:00"}
    assert session.scalar(select(func.count()).select_from(AuditLog).where(AuditLog.action == "voucher.batch_created")) == 1

    # the list shows prefixes and counts, never the full codes
    listing = client.get("/admin/vouchers").get_data(as_text=True)
    for code in codes:
        assert code not in listing and f"{code[:4]}-…" in listing
    assert listing.count("0 / 2") == 3

    # resubmitting the same form creates nothing and does not show the codes again
    again = client.post("/admin/vouchers", data=form, follow_redirects=True)
    assert session.scalar(select(func.count()).select_from(Voucher)) == 3
    assert "already created" in again.get_data(as_text=True)
    assert all(code not in again.get_data(as_text=True) for code in codes)


def test_invalid_batch_form_comes_back_with_errors_and_creates_nothing(client, session, factory):
    admin = factory.admin()
    login(client, admin.email, ADMIN_PASSWORD)
    token = get_csrf(client, "/admin/vouchers")
    response = client.post(
        "/admin/vouchers", data={"csrf_token": token, "count": "0", "value": "abc", "max_redemptions": "1"}
    )
    assert response.status_code == 400
    assert "Between 1 and" in response.get_data(as_text=True)
    assert session.scalar(select(func.count()).select_from(Voucher)) == 0


def test_admin_disables_a_voucher_with_htmx_and_it_is_audited(client, session, factory):
    admin = factory.admin()
    new_code(session)
    voucher = session.scalar(select(Voucher))
    login(client, admin.email, ADMIN_PASSWORD)

    response = client.post(f"/admin/vouchers/{voucher.id}/disable", headers=htmx_headers(client, "/admin/vouchers"))

    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert f'id="voucher-{voucher.id}" data-status="disabled"' in body and 'hx-swap-oob="true"' in body
    session.expire_all()
    assert session.get(Voucher, voucher.id).disabled_at is not None
    assert session.scalar(select(AuditLog.actor_id).where(AuditLog.action == "voucher.disabled")) == admin.id
    assert client.post("/admin/vouchers/999/disable", headers=htmx_headers(client, "/admin/vouchers")).status_code == 404


def test_voucher_admin_pages_need_the_admin_role(client, session, factory):
    customer = factory.customer()
    assert client.get("/admin/vouchers").status_code in (302, 401)
    login(client, customer.email)
    token = get_csrf(client, "/dashboard")
    assert client.get("/admin/vouchers").status_code == 403
    assert client.post("/admin/vouchers", data={"csrf_token": token, "count": "1", "value": "5",
                                                "max_redemptions": "1"}).status_code == 403
    assert session.scalar(select(func.count()).select_from(Voucher)) == 0


def test_redeeming_needs_login_and_csrf(client, session, factory):
    code = new_code(session)
    assert client.post("/vouchers/redeem", data={"code": code}).status_code in (302, 400, 401)
    customer = factory.customer()
    login(client, customer.email)
    assert client.post("/vouchers/redeem", data={"code": code}, headers={"HX-Request": "true"}).status_code == 400
    assert credited(session, customer.id) == (0, 0, 0)


# ---------------------------------------------------------------- customer ---
def test_the_dashboard_shows_the_redeem_panel(client, factory):
    customer = factory.customer()
    login(client, customer.email)
    body = client.get("/dashboard").get_data(as_text=True)
    assert 'id="redeem-panel"' in body and 'hx-post="/vouchers/redeem"' in body


def test_htmx_redeem_returns_the_panel_and_the_new_voucher_balance_out_of_band(client, session, factory):
    customer = factory.customer()
    code = new_code(session, value_cents=2500)
    login(client, customer.email)

    response = redeem(client, "  " + code.lower().replace("-", " ") + " ", htmx_headers(client))

    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert 'id="redeem-panel"' in body and "$25.00 added to your voucher balance" in body
    figures = re.search(r'<section class="figures" id="figures" hx-swap-oob="true">.*?</section>', body, re.S).group(0)
    assert re.search(r'id="voucher-balance">\$25\.00<', figures)
    assert credited(session, customer.id) == (2500, 1, 1)


def test_without_javascript_redeem_flashes_and_redirects_to_the_dashboard(client, session, factory):
    customer = factory.customer()
    code = new_code(session, value_cents=1000)
    login(client, customer.email)
    token = get_csrf(client, "/dashboard")
    response = client.post("/vouchers/redeem", data={"code": code, "csrf_token": token})
    assert response.status_code == 303 and response.headers["Location"].endswith("/dashboard")
    page = client.get("/dashboard").get_data(as_text=True)
    assert "added to your voucher balance" in page and re.search(r'id="voucher-balance">\$10\.00<', page)


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("unknown", 404, "could not find"),
        ("malformed", 422, "XXXX-XXXX"),
        ("empty", 400, "Enter a voucher code"),
        ("already", 409, "already redeemed this voucher"),
        ("exhausted", 409, "fully redeemed"),
        ("disabled", 400, "no longer valid"),
    ],
)
def test_refused_codes_come_back_as_the_panel_with_a_clear_message(client, session, factory, case, status, message):
    customer = factory.customer()
    other = factory.customer()
    code = new_code(session, value_cents=800, max_redemptions=1)
    if case == "unknown":
        code = v.generate_code()
    elif case == "malformed":
        code = "hello"
    elif case == "empty":
        code = "  "
    elif case == "already":
        v.redeem_voucher(session, customer_id=customer.id, code=code)
    elif case == "exhausted":
        v.redeem_voucher(session, customer_id=other.id, code=code)
    elif case == "disabled":
        v.disable_voucher(session, actor_id=None, voucher_id=session.scalar(select(Voucher.id)))
    before = credited(session, customer.id)
    login(client, customer.email)

    response = redeem(client, code, htmx_headers(client))

    assert response.status_code == status
    body = response.get_data(as_text=True)
    assert 'id="redeem-panel"' in body and message in html.unescape(body)
    assert 'id="figures"' not in body
    assert credited(session, customer.id) == before


# ---------------------------------------------------------------- throttle ---
def test_the_eleventh_wrong_code_is_refused_by_the_limiter_even_when_valid(client, session, factory):
    customer = factory.customer()
    valid = new_code(session, value_cents=5000)
    login(client, customer.email)
    headers = htmx_headers(client)

    for _ in range(10):
        assert redeem(client, v.generate_code(), headers).status_code == 404

    response = redeem(client, valid, headers)

    assert response.status_code == 429
    assert "Too many attempts. Try again in 10 minutes." in response.get_data(as_text=True)
    assert credited(session, customer.id) == (0, 0, 0)
    assert session.scalar(select(Voucher.redemptions_count)) == 0


def test_successful_redemptions_do_not_count_towards_the_limit(client, session, factory):
    customer = factory.customer()
    codes = [new_code(session, value_cents=100) for _ in range(3)]
    login(client, customer.email)
    headers = htmx_headers(client)
    for _ in range(9):
        assert redeem(client, v.generate_code(), headers).status_code == 404
    for code in codes:
        assert redeem(client, code, headers).status_code == 200
    assert credited(session, customer.id) == (300, 3, 3)


def client_from(app, ip: str, email: str):
    """A logged-in client at `ip`. Each client gets its own app context when used (see `as_client`):
    the test's pushed app context would otherwise share `g` (and its cached CSRF token) between clients."""
    c = app.test_client()
    c.environ_base["REMOTE_ADDR"] = ip
    with app.app_context():
        login(c, email)
    return c


def redeem_as(app, c, code):
    with app.app_context():
        return redeem(c, code, htmx_headers(c))


def test_the_limit_applies_per_customer_across_ip_addresses(app, session, factory):
    customer = factory.customer()
    valid = new_code(session)
    for n in range(10):
        c = client_from(app, f"10.0.0.{n + 1}", customer.email)
        assert redeem_as(app, c, v.generate_code()).status_code == 404
    c = client_from(app, "10.0.1.1", customer.email)
    assert redeem_as(app, c, valid).status_code == 429
    assert credited(session, customer.id) == (0, 0, 0)


def test_one_customers_wrong_codes_never_lock_out_another_customer_at_the_same_address(app, session, factory):
    customers = [factory.customer() for _ in range(2)]
    valid = new_code(session)
    first = client_from(app, "192.0.2.7", customers[0].email)
    second = client_from(app, "192.0.2.7", customers[1].email)
    for _ in range(10):
        assert redeem_as(app, first, v.generate_code()).status_code == 404
    locked = redeem_as(app, first, v.generate_code())
    assert locked.status_code == 429 and "Too many attempts" in locked.get_data(as_text=True)
    assert 0 < int(locked.headers["Retry-After"]) <= 600

    assert redeem_as(app, second, valid).status_code == 200
    assert credited(session, customers[1].id) == (2500, 1, 1)


def test_the_limit_applies_per_ip_across_many_customers(app, session, factory):
    valid = new_code(session)
    for _n in range(5):
        guesser = client_from(app, "192.0.2.8", factory.customer().email)
        for _ in range(10):
            assert redeem_as(app, guesser, v.generate_code()).status_code == 404
    latecomer = factory.customer()
    response = redeem_as(app, client_from(app, "192.0.2.8", latecomer.email), valid)
    assert response.status_code == 429 and "Retry-After" in response.headers
    assert credited(session, latecomer.id) == (0, 0, 0)
    other_ip = client_from(app, "192.0.2.9", latecomer.email)
    assert redeem_as(app, other_ip, valid).status_code == 200
    assert credited(session, latecomer.id) == (2500, 1, 1)
