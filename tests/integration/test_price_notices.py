"""Price-change notices (SPEC §16): a price scheduled for next week is announced — after the admin
confirmed a count they were shown — to exactly the customers who will create deployments of the
plan, with a month's cost before and after, once per price version."""

from decimal import Decimal

import pytest
from sqlalchemy import func, select

from app.billing.price_notices import announce_price_change
from app.models.foresight import PriceChangeNotice
from app.models.usage import Plan, PlanPrice
from tests.conftest import get_csrf, login
from tests.integration.dunning_helpers import at, plain_text, queued_jobs, travel
from tests.integration.usage_helpers import make_plan, run_deployment

pytestmark = pytest.mark.integration

NOW = at("2026-11-23T12:00:00")


def test_a_price_change_scheduled_for_next_week_emails_exactly_the_affected_customers_once(
    app, session, factory, client, worker, mailbox
):
    make_plan(session, price="0.100000")
    make_plan(session, size="medium", price="0.400000")
    running = factory.customer(email="running@example.com")
    recent = factory.customer(email="recent@example.com")
    long_ago = factory.customer(email="long-ago@example.com")
    other_plan = factory.customer(email="other-plan@example.com")
    factory.customer(email="nothing@example.com")
    run_deployment(session, running, "pc-running", "vm-small", "2026-11-01T00:00:00")
    run_deployment(session, recent, "pc-recent", "vm-small", "2026-10-01T00:00:00", "2026-10-20T00:00:00")
    run_deployment(session, long_ago, "pc-long-ago", "vm-small", "2026-05-01T00:00:00", "2026-06-01T00:00:00")
    run_deployment(session, other_plan, "pc-other", "vm-medium", "2026-11-01T00:00:00")
    factory.admin()
    session.commit()
    plan = session.scalar(select(Plan).where(Plan.name == "vm-small"))
    versions = session.scalar(select(func.count(PlanPrice.id)))

    with travel(NOW):
        login(client, "root@example.com", "admin-password-1")
        token = get_csrf(client, f"/admin/pricing/{plan.id}")
        form = {"hourly_price": "0.12", "effective_at": "2026-11-30T00:00", "csrf_token": token}
        preview = client.post(f"/admin/pricing/{plan.id}/price", data=form)
        assert preview.status_code == 200
        html = preview.get_data(as_text=True)
        assert "2 customers</strong> will be told" in html
        assert "$73.00 → $87.60" in html
        assert session.scalar(select(func.count(PlanPrice.id))) == versions  # nothing written yet
        assert mailbox.messages == []
        confirmed = client.post(f"/admin/pricing/{plan.id}/price", data={**form, "confirmed": "yes"})
        assert confirmed.status_code == 303
    if queued_jobs(app):
        worker.run_burst()

    mails = [m for m in mailbox.messages if "New prices" in m["Subject"]]
    assert sorted(m["To"] for m in mails) == ["recent@example.com", "running@example.com"]
    for mail in mails:
        assert mail["Subject"] == "New prices from 30 November 2026, 00:00 UTC: vm-small"
        text = plain_text(mail)
        assert ("vm-small: $0.12 per hour instead of $0.10; a month (730 hours) of one new deployment: $87.60 "
                "instead of $73.00 (before tax).") in text
        assert "Deployments you already run keep the price they were created with." in text

    # Once per price version: announcing it again tells nobody.
    version = session.scalar(select(PlanPrice).where(PlanPrice.plan_id == plan.id).order_by(PlanPrice.id.desc()))
    with travel(NOW):
        assert announce_price_change(session, version, Decimal("0.10")) == 0
        session.commit()
    if queued_jobs(app):
        worker.run_burst()
    assert len([m for m in mailbox.messages if "New prices" in m["Subject"]]) == 2
    assert session.scalar(select(func.count(PriceChangeNotice.id))) == 2

    # The dashboard notice, until the price takes effect; not for the others.
    running_client, other_client = app.test_client(), app.test_client()
    with travel(NOW):
        login(running_client, running.email)
        html = running_client.get("/dashboard").get_data(as_text=True)
        assert "From 30 November 2026, 00:00 UTC, a new <strong>vm-small</strong> deployment costs" in html
        assert "$87.60 a month instead of $73.00" in html
        assert "Deployments you already run keep the price they were created with." in html
        login(other_client, other_plan.email)
        assert 'id="price-notices"' not in other_client.get("/dashboard").get_data(as_text=True)
    with travel(at("2026-11-30T00:00:01")):
        login(running_client, running.email)
        assert 'id="price-notices"' not in running_client.get("/dashboard").get_data(as_text=True)


def test_cancelling_a_scheduled_price_withdraws_its_notices(app, session, factory):
    from app.billing import pricing

    make_plan(session, price="0.100000")
    customer = factory.customer(email="cancelled@example.com")
    run_deployment(session, customer, "pc-cancel", "vm-small", "2026-11-01T00:00:00")
    plan = session.scalar(select(Plan).where(Plan.name == "vm-small"))
    with travel(NOW):
        version = pricing.change_price(session, None, plan.id, "0.12", at("2026-11-30T00:00:00"))
        assert session.scalar(select(func.count(PriceChangeNotice.id))) == 1
        pricing.cancel_scheduled_price(session, None, plan.id, version.id)
    assert session.scalar(select(func.count(PriceChangeNotice.id))) == 0


def test_a_price_effective_at_once_is_not_announced(app, session, factory, client):
    make_plan(session, price="0.100000")
    customer = factory.customer(email="now@example.com")
    run_deployment(session, customer, "pc-now", "vm-small", "2026-11-01T00:00:00")
    factory.admin()
    session.commit()
    plan = session.scalar(select(Plan).where(Plan.name == "vm-small"))
    with travel(NOW):
        login(client, "root@example.com", "admin-password-1")
        token = get_csrf(client, f"/admin/pricing/{plan.id}")
        html = client.post(f"/admin/pricing/{plan.id}/price",
                           data={"hourly_price": "0.11", "csrf_token": token}).get_data(as_text=True)
        assert "No customer will be told (the price takes effect at once)." in html
        assert client.post(f"/admin/pricing/{plan.id}/price",
                           data={"hourly_price": "0.11", "csrf_token": token, "confirmed": "yes"}).status_code == 303
    assert session.scalar(select(func.count(PriceChangeNotice.id))) == 0
