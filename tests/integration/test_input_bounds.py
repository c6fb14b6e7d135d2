"""Bounds at the input doors: ids in URLs, page numbers, periods and dates, control characters,
and error pages that roll the session back and never raise."""

import pytest
from sqlalchemy import func, select

from app.models import User
from app.models.voucher import Voucher
from tests.conftest import get_csrf, login
from tests.money_support import make_invoice

pytestmark = pytest.mark.integration

HUGE_IDS = ["99999999999999999999", "9223372036854775808", "2147483648", "0", "-1", "1e999"]


@pytest.fixture
def customer(factory, client):
    user = factory.customer(email="bounds@example.com")
    login(client, user.email)
    return user


@pytest.fixture
def admin_client(app, factory, session):
    factory.admin()
    session.commit()
    admin = app.test_client()
    login(admin, "root@example.com", "admin-password-1")
    return admin


@pytest.mark.parametrize("huge", HUGE_IDS)
def test_ids_beyond_the_integer_range_are_404(client, admin_client, customer, huge):
    token = get_csrf(client, "/cards")
    assert client.get(f"/invoices/{huge}").status_code == 404
    assert client.post(f"/cards/{huge}/default", data={"csrf_token": token}).status_code == 404
    assert client.post(f"/cards/{huge}/remove", data={"csrf_token": token}).status_code == 404
    assert admin_client.get(f"/admin/pricing/{huge}").status_code == 404
    assert admin_client.get(f"/admin/customers/{huge}").status_code == 404
    assert admin_client.get(f"/admin/invoices/{huge}").status_code == 404


def test_every_id_in_the_url_map_goes_through_the_bounded_converter(app):
    from app.web.helpers import IdConverter

    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("api."):
            continue  # the platform API bounds its ids itself and answers its own JSON 404 (app.web.api)
        for name, converter in rule._converters.items():
            if name.endswith("_id"):
                assert isinstance(converter, IdConverter), f"{rule.rule}: {name} is not <id:...>"


def test_huge_page_numbers_are_clamped(client, admin_client, customer, session):
    invoice = make_invoice(session, customer.id, 1000)
    for page in ("99999999999999999999", "-5", "1e9", "9" * 5000, "abc"):
        response = client.get(f"/invoices?page={page}")
        assert response.status_code == 200
        assert invoice.number in response.get_data(as_text=True)
        assert admin_client.get(f"/admin/invoices?page={page}").status_code == 200
        assert admin_client.get(f"/admin/customers?page={page}").status_code == 200


@pytest.mark.parametrize("period", ["9999-12", "2026-13", "0001-01", "garbage"])
def test_far_or_malformed_periods_are_a_clear_400(admin_client, period):
    for path in ("/admin/invoices", "/admin/invoices.csv"):
        response = admin_client.get(f"{path}?period={period}")
        assert response.status_code == 400
        assert "period" in response.get_data(as_text=True).lower()


def test_a_voucher_valid_until_9999_is_a_form_error_and_writes_nothing(admin_client, session):
    token = get_csrf(admin_client, "/admin/vouchers")
    response = admin_client.post("/admin/vouchers", data={
        "csrf_token": token, "value": "10.00", "count": "1", "max_redemptions": "1", "valid_until": "9999-12-31",
        "request_key": "far-future",
    })
    assert response.status_code == 400
    assert "The expiry date must lie between 2000 and 2100." in response.get_data(as_text=True)
    assert session.scalar(select(func.count(Voucher.id))) == 0


def test_nul_and_control_characters_are_refused_before_anything_is_stored(app, client, session):
    token = get_csrf(client, "/signup")
    response = client.post("/signup", data={
        "csrf_token": token, "email": "nul@example.com", "name": "Ro\x00bert", "password": "long-enough-pass",
        "confirm": "long-enough-pass",
    })
    assert response.status_code == 400
    assert "control characters" in response.get_data(as_text=True)
    assert session.scalar(select(func.count(User.id))) == 0
    assert client.get("/login?next=%00").status_code == 400


def test_the_error_page_rolls_back_a_failed_session_first(app, session, factory):
    """After a failed flush the session refuses every query (PendingRollbackError) until rolled back;
    the error page queries (current user, open invoices panel), so it must roll back first."""
    from flask_login import login_user
    from sqlalchemy.exc import IntegrityError
    from werkzeug.exceptions import InternalServerError

    from app.extensions import db

    user = factory.customer(email="error-page@example.com")
    with app.test_request_context("/dashboard"):
        login_user(db.session.get(User, user.id))
        db.session.add(User(email="error-page@example.com", password_hash="x"))  # duplicate email
        with pytest.raises(IntegrityError):
            db.session.flush()
        handler = app._find_error_handler(InternalServerError(), [])
        body, status = handler(InternalServerError())
    assert status == 500
    assert "Something went wrong" in body


def test_the_error_page_never_raises_even_when_its_template_does(app, monkeypatch):
    from werkzeug.exceptions import BadRequest

    import app.web as web

    def broken(*args, **kwargs):
        raise RuntimeError("template exploded")

    monkeypatch.setattr(web, "render_template", broken)
    with app.test_request_context("/"):
        body, status = app._find_error_handler(BadRequest(), [])(BadRequest(description="<b>bad</b>"))
    assert status == 400
    assert "Error 400" in body and "&lt;b&gt;bad&lt;/b&gt;" in body
