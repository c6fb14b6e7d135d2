"""Money typed into the portal goes through the one money-input door: worked examples over HTTP."""

import time

import pytest
from sqlalchemy import func, select

from app.billing.adjustments import AdjustmentError, adjust_cash_balance
from app.billing.money import MAX_CENTS
from app.models import AuditLog, BillingCustomer, LedgerEntry, User
from app.models.voucher import Voucher
from tests.conftest import PLATFORM_TOKEN, get_csrf, login

pytestmark = pytest.mark.integration


@pytest.fixture
def customer(factory, client):
    user = factory.customer(email="money@example.com")
    login(client, user.email)
    return user


@pytest.fixture
def admin_client(app, factory, session):
    factory.admin()
    session.commit()
    admin = app.test_client()
    login(admin, "root@example.com", "admin-password-1")
    return admin


@pytest.fixture
def locale(app):
    saved = app.config["LOCALE"]
    yield lambda value: app.config.update(LOCALE=value)
    app.config["LOCALE"] = saved


def _topup(client, amount):
    token = get_csrf(client, "/balance")
    return client.post("/balance/topup", data={"amount": amount, "csrf_token": token})


def _adjust(admin_client, customer_id, amount, reason="goodwill"):
    token = get_csrf(admin_client, f"/admin/customers/{customer_id}")
    return admin_client.post(f"/admin/customers/{customer_id}/adjust",
                             data={"csrf_token": token, "amount": amount, "reason": reason})


def _written(session):
    return (session.scalar(select(func.count(LedgerEntry.id))), session.scalar(select(func.count(AuditLog.id))),
            session.scalar(select(func.count(BillingCustomer.customer_id))))


def test_a_comma_for_cents_is_refused_in_en_us_with_the_expected_form(client, session, customer):
    response = _topup(client, "25,50")
    assert response.status_code == 400
    assert "Use a dot for cents: 25.50." in response.get_data(as_text=True)
    assert _written(session) == (0, 0, 0)


@pytest.mark.parametrize("amount", ["1e999990", "1e999999", "1E+999999", "9" * 1_000_000])
def test_an_exponent_or_a_megabyte_of_digits_is_a_400_at_once(client, session, customer, amount):
    started = time.perf_counter()
    response = _topup(client, amount)
    assert time.perf_counter() - started < 1
    assert response.status_code == 400
    assert _written(session) == (0, 0, 0)


def test_under_de_de_a_comma_means_cents(admin_client, factory, session, locale):
    customer = factory.customer()
    locale("de_DE")
    assert _adjust(admin_client, customer.id, "25,50").status_code == 303
    session.expire_all()
    assert session.get(User, customer.id).cash_balance_cents == 2550
    response = _adjust(admin_client, customer.id, "25.50")
    assert response.status_code == 400
    assert "Use a comma for cents: 25,50." in response.get_data(as_text=True)


def test_an_adjustment_near_2_63_is_refused_cleanly_and_writes_nothing(admin_client, factory, session):
    customer = factory.customer()
    for amount in ("92233720368547758.07", "-92233720368547758.08", "92,233,720,368,547,758.07", "100000.01"):
        response = _adjust(admin_client, customer.id, amount)
        assert response.status_code == 400, amount
        assert "Enter an amount between" in response.get_data(as_text=True)
    assert _written(session) == (0, 0, 0)


def test_balances_stop_at_the_64_bit_safe_bound_and_the_api_answers_integers(app, client, factory, session):
    customer = factory.customer()
    adjust_cash_balance(session, actor_id=None, customer_id=customer.id, amount_cents=MAX_CENTS, reason="max",
                        request_key="a")
    with pytest.raises(AdjustmentError, match="cannot exceed"):
        adjust_cash_balance(session, actor_id=None, customer_id=customer.id, amount_cents=1, reason="one more",
                            request_key="b")
    session.expire_all()
    assert session.get(User, customer.id).cash_balance_cents == MAX_CENTS
    assert session.scalar(select(func.count(LedgerEntry.id))) == 1
    body = client.get(f"/api/v1/customers/{customer.id}/billing-status",
                      headers={"Authorization": f"Bearer {PLATFORM_TOKEN}"}).get_json()
    assert body["cash_balance_cents"] == MAX_CENTS and isinstance(body["cash_balance_cents"], int)


def test_the_database_refuses_a_balance_beyond_the_bound(session, factory):
    from sqlalchemy.exc import IntegrityError

    customer = factory.customer()
    with pytest.raises(IntegrityError):
        session.execute(User.__table__.update().where(User.id == customer.id).values(cash_balance_cents=MAX_CENTS + 1))
        session.flush()
    session.rollback()


def test_a_voucher_batch_worth_more_than_the_configured_total_is_refused(admin_client, session):
    token = get_csrf(admin_client, "/admin/vouchers")
    for value, count, redemptions, message in [
        ("92233720368547758.07", 1, 1, "Enter at most"),
        ("1000.00", 1000, 1_000_000, "the limit is"),
    ]:
        response = admin_client.post("/admin/vouchers", data={
            "csrf_token": token, "value": value, "count": count, "max_redemptions": redemptions,
            "request_key": f"k-{value}",
        })
        assert response.status_code == 400, value
        assert message in response.get_data(as_text=True)
    assert session.scalar(select(func.count(Voucher.id))) == 0
