from datetime import timedelta
from decimal import Decimal

import pytest

from app.billing import cards as card_service
from app.models import Card, SettlementRequest
from app.models.base import utcnow
from app.models.usage import Deployment, Plan
from tests.conftest import get_csrf, login

pytestmark = pytest.mark.integration


def _card(session, customer_id, pm, *, last4="4242", default=False, exp=(12, 2099), fingerprint=None):
    card = Card(customer_id=customer_id, stripe_payment_method_id=pm, fingerprint=fingerprint or f"fp_{pm}",
                brand="visa", last4=last4, exp_month=exp[0], exp_year=exp[1], is_default=default)
    session.add(card)
    session.commit()
    return card


def _running_deployment(session, customer_id, hourly="0.500000"):
    plan = Plan(name="vm-small", kind="vm", size="small", public_ip=False)
    session.add(plan)
    session.flush()
    now = utcnow()
    session.add(Deployment(external_id=f"dep-{customer_id}", customer_id=customer_id, name="web", plan_id=plan.id,
                           plan_name=plan.name, hourly_price=Decimal(hourly), state="running",
                           created_at=now - timedelta(days=1), last_event_at=now - timedelta(days=1)))
    session.commit()


@pytest.fixture
def customer(factory):
    return factory.customer(email="cards@example.com")


def _htmx_post(client, path):
    token = get_csrf(client, "/cards")
    return client.post(path, headers={"HX-Request": "true", "X-CSRFToken": token})


def test_the_cards_page_lists_cards_with_expired_and_default_badges(client, session, customer):
    _card(session, customer.id, "pm_a", last4="1111", default=True)
    _card(session, customer.id, "pm_b", last4="2222", exp=(1, 2020))
    login(client, customer.email)
    html = client.get("/cards").get_data(as_text=True)
    assert 'id="card-list"' in html and 'id="add-card"' in html
    assert "1111" in html and "2222" in html
    assert html.count("badge-default") == 1 and html.count("badge-expired") == 1
    assert html.index("1111") < html.index("2222")


def test_set_default_over_htmx_returns_the_list_and_requests_settlement(client, session, customer):
    first = _card(session, customer.id, "pm_a", last4="1111", default=True)
    second = _card(session, customer.id, "pm_b", last4="2222")
    login(client, customer.email)
    response = _htmx_post(client, f"/cards/{second.id}/default")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert body.startswith('<section id="card-list">') and 'hx-swap-oob="true"' in body
    session.expire_all()
    assert session.get(Card, second.id).is_default and not session.get(Card, first.id).is_default
    assert session.get(SettlementRequest, customer.id) is not None


def test_an_expired_card_cannot_become_default(client, session, customer):
    _card(session, customer.id, "pm_a", default=True)
    expired = _card(session, customer.id, "pm_old", exp=(1, 2020))
    login(client, customer.email)
    response = _htmx_post(client, f"/cards/{expired.id}/default")
    assert response.status_code == 409
    assert "expired" in response.get_data(as_text=True)
    session.expire_all()
    assert session.get(Card, expired.id).is_default is False


def test_removing_the_last_card_is_refused_while_deployments_run_uncovered(client, session, customer):
    only = _card(session, customer.id, "pm_only", default=True)
    _running_deployment(session, customer.id)
    login(client, customer.email)
    response = _htmx_post(client, f"/cards/{only.id}/remove")
    assert response.status_code == 409
    assert "You cannot remove your last card" in response.get_data(as_text=True)
    session.expire_all()
    assert session.get(Card, only.id).removed_at is None


def test_another_customers_card_is_not_found(client, session, factory, customer):
    stranger = factory.customer(email="stranger@example.com")
    theirs = _card(session, stranger.id, "pm_theirs", default=True)
    login(client, customer.email)
    assert _htmx_post(client, f"/cards/{theirs.id}/default").status_code == 404
    assert _htmx_post(client, f"/cards/{theirs.id}/remove").status_code == 404
    session.expire_all()
    assert session.get(Card, theirs.id).removed_at is None


def test_usable_cards_are_default_first_then_newest_and_skip_expired_and_removed(session, customer):
    old = _card(session, customer.id, "pm_1")
    default = _card(session, customer.id, "pm_2", default=True)
    newest = _card(session, customer.id, "pm_3")
    _card(session, customer.id, "pm_4", exp=(1, 2020))
    removed = _card(session, customer.id, "pm_5")
    removed.removed_at = utcnow()
    session.commit()
    assert [c.id for c in card_service.usable_cards(session, customer.id)] == [default.id, newest.id, old.id]


@pytest.mark.parametrize(
    "path", ["/cards", "/balance", "/stripe/checkout/card/return?session_id=cs_x", "/stripe/checkout/topup/return"]
)
def test_the_card_and_balance_pages_need_a_login(client, path):
    assert client.get(path).status_code in (302, 401)


def test_post_routes_need_a_login_and_csrf(client, customer):
    assert client.post("/cards/add").status_code in (302, 400, 401)
    login(client, customer.email)
    assert client.post("/cards/add").status_code == 400  # no CSRF token
    assert client.post("/balance/topup", data={"amount": "25"}).status_code == 400


def test_acting_on_a_card_removed_meanwhile_says_so(client, session, customer):
    card = _card(session, customer.id, "pm_gone", default=True)
    card.removed_at = utcnow()
    session.commit()
    login(client, customer.email)
    response = _htmx_post(client, f"/cards/{card.id}/default")
    assert response.status_code == 409
    assert "no longer on your account" in response.get_data(as_text=True)
