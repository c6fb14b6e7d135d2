"""Spending limits (SPEC §16): the customer's limit, the admin's audited ceiling, can-deploy refusing
past it with its reason, the dashboard banner, and alerts at 50/80/100 % sent once each (real SMTP)."""

import pytest
from sqlalchemy import select

from app.models.audit import AuditLog
from app.models.foresight import SpendingAlert, SpendingLimit
from app.models.usage import Deployment
from jobs.foresight import check_spending_limits
from tests.conftest import PLATFORM_TOKEN, get_csrf, login
from tests.integration.dunning_helpers import at, plain_text, queued_jobs, travel
from tests.integration.usage_helpers import add_card, make_plan, run_deployment

pytestmark = pytest.mark.integration


def _can_deploy(client, customer, plan):
    return client.get(f"/api/v1/customers/{customer.id}/can-deploy?plan={plan}",
                      headers={"Authorization": f"Bearer {PLATFORM_TOKEN}"}).get_json()


def _set_limit(client, text):
    token = get_csrf(client, "/dashboard")
    return client.post("/spending-limit", data={"limit": text, "csrf_token": token},
                       headers={"HX-Request": "true"})


def test_can_deploy_refuses_a_deployment_that_would_take_the_month_past_the_limit_and_says_why(
    app, session, factory, client
):
    customer = factory.customer(email="limited@example.com")
    add_card(session, customer)
    make_plan(session, price="0.100000")
    make_plan(session, size="tiny", price="0.010000")
    run_deployment(session, customer, "vm-limited", "vm-small", "2026-11-10T00:00:00")

    with travel(at("2026-11-20T00:00:00")):
        login(client, customer.email)
        response = _set_limit(client, "60.00")
        assert response.status_code == 200
        assert "$24.00 of $60.00 used this month (40 %)" in response.get_data(as_text=True)
        # so far $24.00, the running VM until 1 December $26.40 more: $50.40; a new vm-small adds
        # 264 h × $0.10 = $26.40 → $76.80 > $60.00. A vm-tiny adds $2.64 → $53.04: allowed.
        refused = _can_deploy(client, customer, "vm-small")
        allowed = _can_deploy(client, customer, "vm-tiny")
    assert (refused["allowed"], refused["code"]) == (False, "spending_limit")
    assert refused["reason"] == (
        "The new deployment would cost $26.40 until the end of the month; with $24.00 used so far this month and "
        "$26.40 that the running deployments will cost until then, the month would reach $76.80 (before tax), "
        "over the monthly spending limit of $60.00 (set by the customer).")
    assert (allowed["allowed"], allowed["code"]) == (True, "card")


def test_an_admin_ceiling_caps_the_limit_and_is_audited(app, session, factory, client):
    customer = factory.customer(email="capped@example.com")
    add_card(session, customer)
    make_plan(session, price="0.100000")
    make_plan(session, size="tiny", price="0.010000")
    run_deployment(session, customer, "vm-capped", "vm-small", "2026-11-10T00:00:00")
    session.add(SpendingLimit(customer_id=customer.id, customer_limit_cents=6000))
    admin = factory.admin()
    session.commit()

    with travel(at("2026-11-20T00:00:00")):
        login(client, "root@example.com", "admin-password-1")
        token = get_csrf(client, f"/admin/customers/{customer.id}")
        bad = client.post(f"/admin/customers/{customer.id}/spending-ceiling",
                          data={"ceiling": "1e999", "csrf_token": token})
        assert bad.status_code == 400
        response = client.post(f"/admin/customers/{customer.id}/spending-ceiling",
                               data={"ceiling": "50.00", "csrf_token": token})
        assert response.status_code == 303
        decision = _can_deploy(client, customer, "vm-tiny")
    assert (decision["allowed"], decision["code"]) == (False, "spending_limit")
    assert decision["reason"].endswith("over the monthly spending limit of $50.00 (capped by the administrator).")
    session.expire_all()
    assert session.get(SpendingLimit, customer.id).admin_ceiling_cents == 5000
    audit = session.scalars(select(AuditLog).where(AuditLog.action == "customer.spending_ceiling")).all()
    assert [(a.actor_id, a.target_id, a.before, a.after) for a in audit] == [
        (admin.id, str(customer.id), {"admin_ceiling_cents": None}, {"admin_ceiling_cents": 5000})]


def test_an_invalid_limit_is_refused_with_a_message_and_nothing_is_written(app, session, factory, client):
    customer = factory.customer(email="bad-limit@example.com")
    login(client, customer.email)
    for text in ("abc", "-5", "1e999990", "9" * 41):
        response = _set_limit(client, text)
        assert response.status_code == 400
        assert 'class="field-error"' in response.get_data(as_text=True)
    assert session.get(SpendingLimit, customer.id) is None
    assert _set_limit(client, "").status_code == 200  # empty = no limit


def test_limit_alerts_go_out_once_each_at_50_80_and_100_percent_and_nothing_is_deleted(
    app, session, factory, client, worker, mailbox
):
    customer = factory.customer(email="alerts@example.com")
    add_card(session, customer)
    make_plan(session, price="0.100000")
    run_deployment(session, customer, "vm-alerts", "vm-small", "2026-11-01T00:00:00")
    session.add(SpendingLimit(customer_id=customer.id, customer_limit_cents=4000))
    session.commit()

    def check(moment):
        with travel(at(moment)):
            check_spending_limits()
        if queued_jobs(app):
            worker.run_burst()

    def alerts():
        return [m for m in mailbox.messages if m["To"] == customer.email]

    check("2026-11-09T07:00:00")  # 199 h = $19.90: 49 %
    assert alerts() == []
    check("2026-11-09T08:00:00")  # 200 h = $20.00: 50 %
    check("2026-11-09T09:00:00")
    check("2026-11-14T07:00:00")  # 319 h: 79 %
    assert [m["Subject"] for m in alerts()] == ["You have used 50 % of your monthly spending limit of $40.00"]
    check("2026-11-14T08:00:00")  # 320 h = $32.00: 80 %
    check("2026-11-17T16:00:00")  # 400 h = $40.00: 100 %
    check("2026-11-18T16:00:00")
    check("2026-11-25T16:00:00")
    subjects = [m["Subject"] for m in alerts()]
    assert subjects == [
        "You have used 50 % of your monthly spending limit of $40.00",
        "You have used 80 % of your monthly spending limit of $40.00",
        "You have reached your monthly spending limit of $40.00",
    ]
    assert "New deployments will be refused" in plain_text(alerts()[2])
    rows = session.scalars(select(SpendingAlert).order_by(SpendingAlert.threshold)).all()
    assert [(r.period, r.threshold, r.spent_cents) for r in rows] == [
        ("2026-11", 50, 2000), ("2026-11", 80, 3200), ("2026-11", 100, 4000)]
    session.expire_all()
    deployment = session.scalar(select(Deployment).where(Deployment.customer_id == customer.id))
    assert (deployment.state, deployment.marked_for_deletion_at) == ("running", None)

    with travel(at("2026-11-25T16:00:00")):
        login(client, customer.email)
        html = client.get("/dashboard").get_data(as_text=True)
    assert 'id="spending-banner"' in html and "You have reached your monthly spending limit of $40.00" in html

    # A new month starts from zero: 50 % again on 9 December 08:00 (200 h), once.
    check("2026-12-09T08:00:00")
    check("2026-12-09T09:00:00")
    assert [m["Subject"] for m in alerts()][3:] == ["You have used 50 % of your monthly spending limit of $40.00"]


def test_a_usage_event_checks_the_limit_at_once(app, session, factory, client, worker, mailbox):
    customer = factory.customer(email="event-alert@example.com")
    make_plan(session, price="0.100000")
    session.add(SpendingLimit(customer_id=customer.id, customer_limit_cents=4000))
    session.commit()
    headers = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
    with travel(at("2026-11-09T08:00:00")):  # the platform reports late: the VM ran since the 1st (200 h, $20.00)
        for n, kind in enumerate(("created", "succeeded")):
            body = {"event_id": f"late-{n}", "deployment_id": "vm-late", "customer_id": customer.id, "type": kind,
                    "occurred_at": "2026-11-01T00:00:00Z", "plan": "vm-small"}
            if kind != "created":
                body.pop("plan")
            assert client.post("/api/v1/deployment-events", json=body, headers=headers).status_code == 201
    assert [(a.period, a.threshold) for a in session.scalars(select(SpendingAlert))] == [("2026-11", 50)]
    if queued_jobs(app):
        worker.run_burst()
    assert [m["Subject"] for m in mailbox.messages if m["To"] == customer.email] == [
        "You have used 50 % of your monthly spending limit of $40.00"]
