"""Admin holds and the dunning panels (customer dashboard, admin customer page)."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from app.models import User
from app.models.audit import AuditLog
from app.models.base import utcnow
from tests.conftest import get_csrf, login
from tests.integration.dunning_helpers import open_invoice

pytestmark = pytest.mark.integration


@pytest.fixture
def admin_client(app, client, factory, session):
    admin = factory.admin()
    session.commit()
    login(client, admin.email, "admin-password-1")
    client.admin = admin
    return client


def test_admin_places_and_lifts_a_hold_with_an_audit_trail(app, session, factory, admin_client):
    customer = factory.customer()
    token = get_csrf(admin_client, "/admin/")
    response = admin_client.post(f"/admin/customers/{customer.id}/hold",
                                 data={"reason": "Suspicious sign-up", "csrf_token": token},
                                 headers={"HX-Request": "true"})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'id="customer-dunning"' in html and "On hold" in html and "Suspicious sign-up" in html
    session.expire_all()
    held = session.get(User, customer.id)
    assert (held.on_hold, held.hold_reason) == (True, "Suspicious sign-up")

    response = admin_client.post(f"/admin/customers/{customer.id}/hold/lift", data={"csrf_token": token})
    assert response.status_code == 303
    session.expire_all()
    assert (session.get(User, customer.id).on_hold, session.get(User, customer.id).hold_reason) == (False, None)

    entries = session.scalars(select(AuditLog).order_by(AuditLog.id)).all()
    assert [(e.action, e.actor_id, e.target_id) for e in entries] == [
        ("customer.hold", admin_client.admin.id, str(customer.id)),
        ("customer.lift_hold", admin_client.admin.id, str(customer.id)),
    ]
    assert entries[0].before == {"on_hold": False, "hold_reason": None}
    assert entries[0].after == {"on_hold": True, "hold_reason": "Suspicious sign-up"}


def test_a_hold_needs_a_reason_and_changes_nothing_without_one(app, session, factory, admin_client):
    customer = factory.customer()
    token = get_csrf(admin_client, "/admin/")
    response = admin_client.post(f"/admin/customers/{customer.id}/hold", data={"reason": " ", "csrf_token": token},
                                 headers={"HX-Request": "true"})
    assert response.status_code == 422
    session.expire_all()
    assert session.get(User, customer.id).on_hold is False
    assert session.scalars(select(AuditLog)).all() == []


def test_dunning_admin_actions_need_an_admin_and_an_existing_customer(app, session, factory, client):
    customer = factory.customer()
    login(client, customer.email)
    token = get_csrf(client, "/dashboard")
    for path in (f"/admin/customers/{customer.id}/hold", f"/admin/customers/{customer.id}/hold/lift",
                 f"/admin/customers/{customer.id}/dunning/extend-grace"):
        assert client.post(path, data={"reason": "x", "days": "3", "csrf_token": token}).status_code == 403
    session.expire_all()
    assert session.get(User, customer.id).on_hold is False


def test_extending_grace_for_an_unknown_customer_is_404(app, admin_client):
    token = get_csrf(admin_client, "/admin/")
    assert admin_client.post("/admin/customers/99999/dunning/extend-grace",
                             data={"days": "3", "csrf_token": token}).status_code == 404


def test_dashboard_panel_shows_debt_oldest_unpaid_invoice_and_deletion_date(app, session, factory, client):
    customer = factory.customer()
    issued = utcnow() - timedelta(days=20)  # past its due date (14 days): the deletion date is announced
    oldest = open_invoice(session, customer, 12_000, issued)
    open_invoice(session, customer, 3_000, issued + timedelta(days=5))
    login(client, customer.email)
    html = client.get("/dashboard").get_data(as_text=True)
    assert 'id="dunning-panel"' in html
    assert '<strong id="dunning-debt">$150.00</strong>' in html
    assert f'<span id="dunning-oldest">{oldest.number}</span>' in html
    assert f'<strong id="dunning-deletion-at">{(issued + timedelta(days=92)):%Y-%m-%d}</strong>' in html


def test_dashboard_panel_is_absent_without_debt(app, factory, client):
    customer = factory.customer()
    login(client, customer.email)
    assert 'id="dunning-panel"' not in client.get("/dashboard").get_data(as_text=True)


def test_admin_customer_page_shows_the_dunning_history(app, session, factory, admin_client):
    from jobs.dunning import run_dunning

    customer = factory.customer()
    open_invoice(session, customer, 7_500, utcnow() - timedelta(days=3))
    run_dunning()  # reserves this week's reminder (no worker here: it stays pending)
    html = admin_client.get(f"/admin/customers/{customer.id}").get_data(as_text=True)
    assert 'id="dunning-history"' in html
    assert "reminder (1 invoice)" in html and customer.email in html and ">pending<" in html
    assert '<strong id="dunning-debt">$75.00</strong>' in html

    token = get_csrf(admin_client, f"/admin/customers/{customer.id}")
    response = admin_client.post(f"/admin/customers/{customer.id}/dunning/extend-grace",
                                 data={"days": "10", "csrf_token": token})
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/admin/customers/{customer.id}")
    assert "Grace extended until" in admin_client.get(f"/admin/customers/{customer.id}").get_data(as_text=True)
