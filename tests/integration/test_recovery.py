"""Recovery after payment (SPEC §16): paying what is overdue after the deployments were marked for
deletion (before the platform deletes them) lifts the marks at once, whatever paid it; the platform
is told through the API status and the signed `deployments.unmarked` webhook; the customer gets an
email; the deletion job later marks nothing. An admin's grace extension lifts marks too; admin
holds stay."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from app.billing.dunning import extend_grace
from app.billing.ledger import post_entry
from app.billing.settlement import settle_balances_bulk
from app.billing.topups import credit_topup
from app.models import User
from app.models.usage import Deployment
from app.platform_notify import verify_signature
from jobs.dunning import run_dunning
from tests.conftest import PLATFORM_TOKEN
from tests.integration import dunning_helpers
from tests.integration.dunning_helpers import (
    at,
    open_invoice,
    pay,
    plain_text,
    queued_jobs,
    run_deployment,
    travel,
)

pytestmark = pytest.mark.integration
platform_receiver = dunning_helpers.platform_receiver

ISSUED = at("2027-01-04T10:00:00")
GRACE_END = ISSUED + timedelta(days=92)


def _marked_debtor(app, session, factory, worker, name, **fields):
    customer = factory.customer(email=f"{name}@example.com", **fields)
    run_deployment(session, customer, f"{name}-vm-a", ISSUED - timedelta(days=40))
    run_deployment(session, customer, f"{name}-vm-b", ISSUED - timedelta(days=20))
    invoice = open_invoice(session, customer, 10_000, ISSUED)
    _run(app, worker, GRACE_END)
    assert len(_marked(session, customer)) == 2
    return customer, invoice


def _run(app, worker, moment):
    with travel(moment):
        run_dunning()
    if queued_jobs(app):
        worker.run_burst()


def _marked(session, customer):
    session.expire_all()
    return session.scalars(select(Deployment).where(Deployment.customer_id == customer.id,
                                                    Deployment.marked_for_deletion_at.is_not(None))).all()


def _status(client, customer):
    return client.get(f"/api/v1/customers/{customer.id}/billing-status",
                      headers={"Authorization": f"Bearer {PLATFORM_TOKEN}"}).get_json()


def _unmarked_events(receiver):
    events = []
    for headers, body in receiver.requests:
        verify_signature(body, headers["Paydesk-Signature"], "platform-secret")
        event = receiver.events()[receiver.requests.index((headers, body))]
        if event["type"] == "deployments.unmarked":
            events.append(event)
    return events


def _lifted_mail(mailbox, customer):
    return [m for m in mailbox.messages
            if m["To"] == customer.email and m["Subject"] == "Your deployments are no longer marked for deletion"]


def test_a_top_up_the_day_before_deletion_lifts_the_marks_tells_the_platform_and_mails_the_customer(
    app, session, factory, worker, mailbox, client, platform_receiver
):
    customer, invoice = _marked_debtor(app, session, factory, worker, "topper", on_hold=True, hold_reason="KYC")
    assert _status(client, customer)["deletion_scheduled"] is True
    assert [e["type"] for e in platform_receiver.events()] == ["customer.deployments_marked_for_deletion"]

    # The platform deletes two days after the marks; the customer tops up the day before.
    with travel(GRACE_END + timedelta(days=1)):
        credit_topup(session, customer.id, payment_intent_id="pi_recovery_topup", amount_cents=10_000)
        session.commit()
    worker.run_burst()  # settlement pays the invoice; the lift's webhook and email follow

    session.expire_all()
    assert session.get(type(invoice), invoice.id).state == "paid"
    assert _marked(session, customer) == []
    status = _status(client, customer)
    assert (status["deletion_scheduled"], status["deployments_marked_for_deletion"]) == (False, [])
    unmarked = _unmarked_events(platform_receiver)
    assert len(unmarked) == 1
    assert unmarked[0]["data"]["customer_id"] == customer.id
    assert unmarked[0]["data"]["reason"] == "overdue_invoices_paid"
    assert sorted(d["external_id"] for d in unmarked[0]["data"]["deployments"]) == ["topper-vm-a", "topper-vm-b"]
    mails = _lifted_mail(mailbox, customer)
    assert len(mails) == 1 and "no longer marked for deletion" in plain_text(mails[0])
    assert session.get(User, customer.id).on_hold is True  # the admin's hold is not ours to lift

    # The deletion job later finds nothing to do and tells nobody anything.
    for moment in (GRACE_END + timedelta(days=2), GRACE_END + timedelta(days=30)):
        _run(app, worker, moment)
    assert _marked(session, customer) == []
    assert len(platform_receiver.requests) == 2
    assert len(_lifted_mail(mailbox, customer)) == 1


def test_a_bank_transfer_lifts_the_marks_in_its_own_transaction(
    app, session, factory, worker, mailbox, client, platform_receiver
):
    customer, invoice = _marked_debtor(app, session, factory, worker, "banker")
    pay(session, invoice, GRACE_END + timedelta(hours=5))
    assert _marked(session, customer) == []  # at once, before any job ran
    assert _status(client, customer)["deletion_scheduled"] is False
    worker.run_burst()
    assert len(_unmarked_events(platform_receiver)) == 1
    assert len(_lifted_mail(mailbox, customer)) == 1


def test_paying_only_a_newer_invoice_keeps_the_marks(app, session, factory, worker, platform_receiver):
    customer, _old = _marked_debtor(app, session, factory, worker, "partial")
    newer = open_invoice(session, customer, 500, GRACE_END - timedelta(days=3))
    pay(session, newer, GRACE_END + timedelta(hours=1))
    assert len(_marked(session, customer)) == 2
    assert _unmarked_events(platform_receiver) == []


def test_the_bulk_balance_settlement_lifts_the_marks_too(app, session, factory, worker, mailbox, platform_receiver):
    customer, invoice = _marked_debtor(app, session, factory, worker, "bulk")
    post_entry(session, customer_id=customer.id, account="cash", amount_cents=10_000, kind="topup",
               idempotency_key="test-bulk-cash")
    session.commit()
    settle_balances_bulk(session, [customer.id])
    session.expire_all()
    assert session.get(type(invoice), invoice.id).state == "paid"
    assert _marked(session, customer) == []
    worker.run_burst()
    assert len(_unmarked_events(platform_receiver)) == 1


def test_an_admin_grace_extension_lifts_marks_that_no_longer_apply(
    app, session, factory, worker, mailbox, platform_receiver
):
    customer, _ = _marked_debtor(app, session, factory, worker, "extended")
    admin = factory.admin()
    session.commit()
    with travel(GRACE_END + timedelta(days=1)):
        extend_grace(session, admin.id, customer.id, 30)
    assert _marked(session, customer) == []
    worker.run_burst()
    unmarked = _unmarked_events(platform_receiver)
    assert [e["data"]["reason"] for e in unmarked] == ["grace_extended"]
    assert len(_lifted_mail(mailbox, customer)) == 1
    # still unpaid at the new date: marked again, and the platform told again
    _run(app, worker, GRACE_END + timedelta(days=31))
    assert len(_marked(session, customer)) == 2
