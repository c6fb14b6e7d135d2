"""Grace period and deletion (SPEC §10): warning first, deletion at grace end (not a day before),
paying before the deadline prevents it, the platform is told through the API and a signed webhook."""

import hashlib
import hmac
import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.models.audit import AuditLog
from app.models.dunning import DunningNotice, PlatformWebhookDelivery
from app.models.usage import Deployment
from jobs.dunning import run_dunning
from tests.conftest import PLATFORM_TOKEN
from tests.integration import dunning_helpers
from tests.integration.dunning_helpers import (
    at,
    open_invoice,
    pay,
    pdf_attachments,
    plain_text,
    queued_jobs,
    run_deployment,
    travel,
)

pytestmark = pytest.mark.integration
platform_receiver = dunning_helpers.platform_receiver

ISSUED = at("2027-01-04T10:00:00")
GRACE_END = ISSUED + timedelta(days=92)


def _debtor(session, factory, name="debtor"):
    customer = factory.customer()
    run_deployment(session, customer, f"{name}-vm-a", ISSUED - timedelta(days=40))
    run_deployment(session, customer, f"{name}-vm-b", ISSUED - timedelta(days=20))
    invoice = open_invoice(session, customer, 10_000, ISSUED)
    return customer, invoice


def _marked(session, customer):
    session.expire_all()
    return session.scalars(
        select(Deployment).where(Deployment.customer_id == customer.id, Deployment.marked_for_deletion_at.is_not(None))
    ).all()


def _run(app, worker, moment):
    with travel(moment):
        run_dunning()
    if queued_jobs(app):
        worker.run_burst()


def _billing_status(client, customer):
    response = client.get(f"/api/v1/customers/{customer.id}/billing-status",
                          headers={"Authorization": f"Bearer {PLATFORM_TOKEN}"})
    assert response.status_code == 200
    return response.get_json()


def test_deletion_happens_at_grace_end_not_a_day_before_after_a_warning(
    app, session, factory, worker, mailbox, client, platform_receiver
):
    customer, invoice = _debtor(session, factory)

    _run(app, worker, GRACE_END - timedelta(days=14, minutes=1))
    assert session.scalar(select(DunningNotice).where(DunningNotice.kind == "deletion_warning")) is None
    _run(app, worker, GRACE_END - timedelta(days=14))
    warnings = [m for m in mailbox.messages if "will be deleted" in m["Subject"]]
    assert len(warnings) == 1 and warnings[0]["To"] == customer.email
    assert GRACE_END.strftime("%Y-%m-%d %H:%M") in plain_text(warnings[0])
    assert set(pdf_attachments(warnings[0])) == {f"invoice-{invoice.number}.pdf"}

    _run(app, worker, GRACE_END - timedelta(days=1))
    assert _marked(session, customer) == []
    assert platform_receiver.requests == []
    assert _billing_status(client, customer)["deletion_scheduled"] is False

    _run(app, worker, GRACE_END)
    marked = _marked(session, customer)
    assert sorted(d.external_id for d in marked) == ["debtor-vm-a", "debtor-vm-b"]
    assert all(d.marked_for_deletion_at == GRACE_END for d in marked)
    assert invoice.number in marked[0].deletion_reason
    status = _billing_status(client, customer)
    assert status["deletion_scheduled"] is True
    assert len(status["deployments_marked_for_deletion"]) == 2

    assert len(platform_receiver.requests) == 1
    headers, body = platform_receiver.requests[0]
    fields = dict(item.split("=", 1) for item in headers["Paydesk-Signature"].split(","))
    expected = hmac.new(b"platform-secret", f"{fields['t']}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)
    event = json.loads(body)
    assert event["type"] == "customer.deployments_marked_for_deletion"
    assert event["data"]["customer_id"] == customer.id
    assert sorted(d["external_id"] for d in event["data"]["deployments"]) == ["debtor-vm-a", "debtor-vm-b"]
    assert headers["Paydesk-Event-Id"] == event["id"]

    # Later runs tell the platform nothing new and keep the original marks.
    _run(app, worker, GRACE_END + timedelta(days=1))
    assert len(platform_receiver.requests) == 1
    assert session.scalar(select(PlatformWebhookDelivery.status)) == "delivered"
    assert all(d.marked_for_deletion_at == GRACE_END for d in _marked(session, customer))


def test_paying_the_day_before_grace_end_prevents_the_deletion(
    app, session, factory, worker, mailbox, client, platform_receiver
):
    customer, invoice = _debtor(session, factory)
    _run(app, worker, GRACE_END - timedelta(days=3))
    pay(session, invoice, GRACE_END - timedelta(days=1))

    for moment in (GRACE_END, GRACE_END + timedelta(days=1), GRACE_END + timedelta(days=30)):
        _run(app, worker, moment)
    assert _marked(session, customer) == []
    assert platform_receiver.requests == []
    assert session.scalars(select(PlatformWebhookDelivery)).all() == []
    assert _billing_status(client, customer)["deletion_scheduled"] is False


def test_an_admin_extending_the_grace_postpones_the_deletion_and_is_audited(
    app, session, factory, worker, client, platform_receiver
):
    from tests.conftest import get_csrf, login

    customer, _ = _debtor(session, factory)
    admin = factory.admin()
    session.commit()
    with travel(GRACE_END - timedelta(days=2)):
        login(client, admin.email, "admin-password-1")
        token = get_csrf(client, "/admin/")
        response = client.post(f"/admin/customers/{customer.id}/dunning/extend-grace",
                               data={"days": "30", "csrf_token": token})
    assert response.status_code == 303

    _run(app, worker, GRACE_END)
    assert _marked(session, customer) == []
    _run(app, worker, GRACE_END + timedelta(days=30) - timedelta(minutes=1))
    assert _marked(session, customer) == []
    _run(app, worker, GRACE_END + timedelta(days=30))
    assert len(_marked(session, customer)) == 2

    entry = session.scalar(select(AuditLog).where(AuditLog.action == "dunning.extend_grace"))
    assert entry.actor_id == admin.id and entry.target_id == str(customer.id)
    assert entry.before["deletion_at"].startswith(GRACE_END.date().isoformat())
    assert entry.after["deletion_at"].startswith((GRACE_END + timedelta(days=30)).date().isoformat())


def test_funds_arriving_just_before_grace_end_postpone_deletion_until_settlement_ran(
    app, session, factory, worker, platform_receiver
):
    from app.billing.settlement_requests import request_settlement

    customer, _ = _debtor(session, factory)
    worker.run_burst()  # the settlement requested when the invoice was issued
    with travel(GRACE_END - timedelta(minutes=10)):
        request_settlement(session, customer.id)  # e.g. a card was just added
        session.commit()

    with travel(GRACE_END):
        run_dunning()
    assert _marked(session, customer) == []

    worker.run_burst()  # settlement runs; nothing pays the invoice here
    _run(app, worker, GRACE_END + timedelta(minutes=5))
    assert len(_marked(session, customer)) == 2


def test_concurrent_runs_at_grace_end_tell_the_platform_once(app, session, factory, platform_receiver):
    import threading

    customer, _ = _debtor(session, factory)
    errors = []

    def run():
        try:
            with app.app_context():
                run_dunning(now=GRACE_END)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    deliveries = session.scalars(select(PlatformWebhookDelivery)).all()
    assert len(deliveries) == 1
    assert len(deliveries[0].payload["data"]["deployments"]) == 2
    assert len(_marked(session, customer)) == 2
