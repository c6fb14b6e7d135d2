"""Customer notifications (issue 12): each sent by its real trigger through a real rq worker and the
aiosmtpd SMTP server, recorded in PostgreSQL, sent once even when its job runs twice, with its
attachment; receipts can be turned off, failures and security notices cannot."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from app.billing import cards as card_service
from app.billing import notifications
from app.billing.settlement import settle_customer
from app.billing.topups import credit_topup
from app.models import Invoice
from app.models.base import utcnow
from app.models.notification import Notification
from app.payments.gateway import PaymentMethodInfo
from jobs.dunning import run_dunning
from jobs.notifications import send_notification, sweep_notifications
from jobs.queue import enqueue, get_queue
from tests.conftest import get_csrf, login
from tests.integration.dunning_helpers import (
    open_invoice,
    pdf_attachments,
    plain_text,
    queued_jobs,
    run_deployment,
    travel,
)
from tests.money_support import add_card, credit, make_invoice

pytestmark = pytest.mark.integration
DECLINES_OFF_SESSION = "4000000000000341"


def rows(session, customer_id, kind=None):
    session.expire_all()
    query = select(Notification).where(Notification.customer_id == customer_id)
    if kind:
        query = query.where(Notification.kind == kind)
    return list(session.scalars(query.order_by(Notification.id)))


def mails(mailbox, email, subject_part=""):
    return [m for m in list(mailbox.messages) if m["To"] == email and subject_part in m["Subject"]]


def html_text(message) -> str:
    return message.get_body(("html",)).get_content()


# --------------------------------------------------------------- invoice issued ---
def test_invoice_issued_is_mailed_once_with_its_pdf_even_when_its_job_runs_twice(session, factory, worker, mailbox):
    customer = factory.customer(name="Ada Lovelace")
    credit(session, customer.id, "cash", 500)
    invoice = make_invoice(session, customer.id, 1250)
    [row] = rows(session, customer.id, "invoice_issued")
    assert (row.key, row.status, row.attachment) == (f"invoice-issued:{invoice.id}", "pending", ["invoice_pdf", invoice.id])
    enqueue(send_notification, row.id)  # a duplicate job for the same notification

    worker.run_burst()

    [message] = mailbox.wait_for(1)
    assert message["To"] == customer.email
    assert message["Subject"] == f"Your Paydesk invoice {invoice.number}"
    assert message["Message-ID"] == notifications.message_id_for(f"invoice-issued:{invoice.id}")
    text = plain_text(message)
    due = (invoice.issued_at + timedelta(days=14)).strftime("%Y-%m-%d")
    assert "Total: $12.50" in text and f"Due date: {due}" in text
    assert "$5.00" in text and "from your balance" in text  # how it is paid: the balance covers $5.00 ...
    assert "$7.50 not covered yet" in text  # ... and no card pays the rest
    assert f"<strong>{invoice.number}</strong>" in html_text(message)
    attachments = pdf_attachments(message)
    assert list(attachments) == [f"invoice-{invoice.number}.pdf"]
    assert invoice.number in attachments[f"invoice-{invoice.number}.pdf"]
    [row] = rows(session, customer.id, "invoice_issued")
    assert (row.status, row.attempts, row.to_email) == ("sent", 1, customer.email)

    # the job again, later (an RQ retry, a duplicate): nothing more is sent
    assert send_notification(row.id) == "claimed elsewhere"
    enqueue(send_notification, row.id)
    worker.run_burst()
    assert len(mails(mailbox, customer.email, "Your Paydesk invoice")) == 1


def test_invoice_issued_says_what_the_default_card_will_be_charged(session, factory, worker, mailbox, stripe):
    customer = factory.customer()
    add_card(session, customer.id, default=True)
    credit(session, customer.id, "cash", 300)
    invoice = make_invoice(session, customer.id, 1000)
    # the mail renders what is known: whether settlement ran before it or not, $3.00 from the
    # balance and $7.00 to the card
    worker.run_burst()
    [message] = mails(mailbox, customer.email, "Your Paydesk invoice")
    text = plain_text(message)
    assert "$3.00" in text and "from your balance" in text
    assert "$7.00" in text and "Visa ending 4242" in text
    assert "not covered" not in text
    session.expire_all()
    assert session.get(Invoice, invoice.id).state == "paid"


def test_a_lost_send_job_is_sent_by_the_sweep_once(session, factory, worker, mailbox):
    customer = factory.customer()
    invoice = make_invoice(session, customer.id, 700)
    get_queue().empty()  # Redis lost every job
    assert sweep_notifications() == 0  # too young: its own job may still be on its way
    with travel(utcnow() + notifications.REQUEUE_AFTER + timedelta(seconds=5)):
        assert sweep_notifications() == 1
        assert sweep_notifications() == 0  # a second sweep does not pile up jobs
    worker.run_burst()
    assert len(mails(mailbox, customer.email, f"invoice {invoice.number}")) == 1
    assert [r.status for r in rows(session, customer.id)] == ["sent"]


# ------------------------------------------------------------------- receipts ---
def test_a_paid_invoice_gets_a_receipt_listing_its_sources(session, factory, worker, mailbox, stripe):
    customer = factory.customer()
    add_card(session, customer.id, default=True)
    credit(session, customer.id, "voucher", 300)
    credit(session, customer.id, "cash", 200)
    invoice = make_invoice(session, customer.id, 1000)

    worker.run_burst()

    mailbox.wait_for(2)
    [receipt] = mails(mailbox, customer.email, "Receipt:")
    assert receipt["Subject"] == f"Receipt: invoice {invoice.number} is paid"
    text = plain_text(receipt)
    assert "$3.00 from voucher balance" in text
    assert "$2.00 from cash balance" in text
    assert "$5.00 from Visa ending 4242" in text
    assert list(pdf_attachments(receipt)) == [f"invoice-{invoice.number}.pdf"]
    assert "turn them off" in text
    assert [(r.kind, r.status) for r in rows(session, customer.id)] == [
        ("invoice_issued", "sent"), ("payment_receipt", "sent")]


def test_receipts_off_no_receipt_but_the_failed_payment_is_still_mailed(
    app, client, session, factory, worker, mailbox, stripe
):
    customer = factory.customer()
    login(client, customer.email)
    response = client.post("/settings/notifications", data={"csrf_token": get_csrf(client, "/settings/notifications")})
    assert response.status_code == 303  # the box unticked: receipts off
    session.expire_all()
    assert notifications.receipts_enabled(session, customer.id) is False
    card = add_card(session, customer.id, DECLINES_OFF_SESSION, default=True)
    credit(session, customer.id, "cash", 500)
    small = make_invoice(session, customer.id, 500)
    large = make_invoice(session, customer.id, 2000)

    worker.run_burst()

    mailbox.wait_for(3)
    assert mails(mailbox, customer.email, "Receipt") == []
    [failed] = mails(mailbox, customer.email, "Payment failed")
    assert failed["Subject"] == f"Payment failed for invoice {large.number}"
    text = plain_text(failed)
    assert f"Visa ending 0341 declined on {utcnow():%Y-%m-%d}" in text
    assert "$20.00" in text
    assert f"/invoices/{large.id}" in text  # a link to pay
    assert f"/invoices/{large.id}" in html_text(failed)
    by_kind = {(r.kind, r.context.get("invoice_id")): r.status for r in rows(session, customer.id)}
    assert by_kind == {
        ("invoice_issued", small.id): "sent", ("invoice_issued", large.id): "sent",
        ("payment_receipt", small.id): "skipped", ("payment_failed", large.id): "sent",
    }
    session.refresh(card)
    assert card.is_default  # nothing changed the default


def test_declined_default_then_another_card_pays_one_receipt_and_no_failure_mail(
    session, factory, worker, mailbox, stripe
):
    customer = factory.customer()
    add_card(session, customer.id, "5555555555554444", created_at=utcnow() - timedelta(days=1))
    add_card(session, customer.id, DECLINES_OFF_SESSION, default=True)
    invoice = make_invoice(session, customer.id, 2500)

    worker.run_burst()

    mailbox.wait_for(2)
    assert mails(mailbox, customer.email, "Payment failed") == []
    [receipt] = mails(mailbox, customer.email, "Receipt")
    text = plain_text(receipt)
    assert "$25.00 from " in text and " ending 4444 on " in text  # (the emulator brands every card Visa)
    assert "Visa ending 0341 declined on" in text  # the customer learns about the decline
    session.expire_all()
    assert session.get(Invoice, invoice.id).state == "paid"


def test_bulk_settlement_sends_receipts_once(session, factory, worker, mailbox):
    from jobs.settlement import settle_customers_job

    customers = [factory.customer() for _ in range(3)]
    for customer in customers:
        credit(session, customer.id, "cash", 1000)
        make_invoice(session, customer.id, 400)
    get_queue().empty()
    settle_customers_job([c.id for c in customers])
    settle_customers_job([c.id for c in customers])  # again: nothing more

    session.expire_all()
    receipts = [r for c in customers for r in rows(session, c.id, "payment_receipt")]
    assert len(receipts) == 3

    worker.run_burst()  # the receipts, enqueued when the bulk transaction committed

    for customer in customers:
        assert len(mails(mailbox, customer.email, "Receipt")) == 1
    with travel(utcnow() + notifications.REQUEUE_AFTER + timedelta(seconds=5)):
        assert sweep_notifications() == 3  # the invoice-issued jobs emptied from the queue above
    worker.run_burst()
    for customer in customers:
        assert len(mails(mailbox, customer.email, "Receipt")) == 1
        assert len(mails(mailbox, customer.email, "Your Paydesk invoice")) == 1


def test_a_top_up_gets_a_receipt_once(session, factory, worker, mailbox):
    customer = factory.customer()
    for _ in range(2):  # the redirect and the webhook both credit: one top-up, one receipt
        credit_topup(session, customer.id, payment_intent_id="pi_receipt_1", amount_cents=2550)
        session.commit()
    worker.run_burst()
    [message] = mails(mailbox, customer.email, "topped up")
    text = plain_text(message)
    assert "$25.50" in text and "pi_receipt_1" in text
    assert [(r.kind, r.status) for r in rows(session, customer.id)] == [("topup_receipt", "sent")]


# ------------------------------------------------------------- security notices ---
def _pm(n: int, last4: str) -> PaymentMethodInfo:
    return PaymentMethodInfo(id=f"pm_notify_{n}", customer=None, fingerprint=f"fp_{n}", brand="visa", last4=last4,
                             exp_month=12, exp_year=2034)


def test_card_added_removed_and_default_changed_are_security_notices_even_with_receipts_off(
    session, factory, worker, mailbox, quiet_stripe
):
    customer = factory.customer(email_receipts=False)
    first = card_service.record_payment_method(session, customer.id, _pm(1, "4242"))
    session.commit()
    second = card_service.record_payment_method(session, customer.id, _pm(2, "1881"))
    session.commit()
    card_service.set_default_card(session, customer.id, second.id)
    card_service.set_default_card(session, customer.id, second.id)  # already the default: no notice
    card_service.remove_card(session, customer.id, second.id)

    worker.run_burst()

    subjects = sorted(m["Subject"] for m in mailbox.wait_for(4))
    assert subjects == sorted([
        "Security notice: Visa ending 4242 was added to your account",
        "Security notice: Visa ending 1881 was added to your account",
        "Security notice: Visa ending 1881 is now your default card",
        "Security notice: Visa ending 1881 was removed from your account",
    ])
    [removed] = mails(mailbox, customer.email, "removed")
    assert "Visa ending 4242 is your default card now" in plain_text(removed)
    [changed] = mails(mailbox, customer.email, "now your default")
    assert "(it was Visa ending 4242)" in plain_text(changed)
    assert first.id != second.id


# ------------------------------------------------------------------- dunning ---
def test_deletion_marks_deletion_and_grace_extension_are_mailed(app, session, factory, worker, mailbox):
    from app.billing.dunning import extend_grace
    from app.billing.usage import record_deployment_event
    from tests.integration.dunning_helpers import at

    admin = factory.admin()
    customer = factory.customer(email_receipts=False)
    issued = at("2027-01-04T10:00:00")
    run_deployment(session, customer, "doomed-vm", issued - timedelta(days=30))
    open_invoice(session, customer, 10_000, issued)

    extend_grace(session, admin.id, customer.id, 10, now=issued + timedelta(days=1))
    with travel(issued + timedelta(days=103)):
        run_dunning()
        run_dunning()
    with travel(issued + timedelta(days=104)):
        record_deployment_event(session, event_id="ev-doomed-deleted", deployment_id="doomed-vm",
                                customer_id=customer.id, kind="deleted", occurred_at=issued + timedelta(days=104))
        session.commit()
    if queued_jobs(app):
        worker.run_burst()

    [grace] = mails(mailbox, customer.email, "More time to pay")
    assert "10 more days" in plain_text(grace)
    [marked] = mails(mailbox, customer.email, "marked for deletion")
    assert "deployment doomed-vm" in plain_text(marked)
    [deleted] = mails(mailbox, customer.email, "was deleted")
    assert deleted["Subject"] == "Your deployment deployment doomed-vm was deleted"
    kinds = [r.kind for r in rows(session, customer.id) if r.kind != "invoice_issued"]
    assert kinds == ["grace_extended", "deployments_marked_for_deletion", "deployments_deleted"]


# ------------------------------------------------------------ monthly invoicing ---
def test_monthly_bulk_invoicing_mails_every_invoice_once_with_its_pdf(session, factory, worker, mailbox):
    from jobs.invoicing import issue_monthly_invoices
    from tests.integration.dunning_helpers import at

    customers = [factory.customer() for _ in range(2)]
    for n, customer in enumerate(customers):
        run_deployment(session, customer, f"monthly-vm-{n}", at("2026-09-03T00:00:00"))
    with travel(at("2026-10-01T00:05:00")):
        report = issue_monthly_invoices("2026-09")
        again = issue_monthly_invoices("2026-09")
    assert (report["invoices"], again["invoices"]) == (2, 0)

    worker.run_burst()

    for customer in customers:
        [message] = mails(mailbox, customer.email, "Your Paydesk invoice")
        invoice = session.scalar(select(Invoice).where(Invoice.customer_id == customer.id))
        assert message["Subject"] == f"Your Paydesk invoice {invoice.number}"
        assert message["Message-ID"] == notifications.message_id_for(f"invoice-issued:{invoice.id}")
        assert list(pdf_attachments(message)) == [f"invoice-{invoice.number}.pdf"]
        assert [(r.kind, r.status) for r in rows(session, customer.id)] == [("invoice_issued", "sent")]


def test_settling_twice_queues_one_receipt(session, factory):
    customer = factory.customer()
    credit(session, customer.id, "cash", 900)
    invoice = make_invoice(session, customer.id, 900)
    settle_customer(session, customer.id)
    settle_customer(session, customer.id)
    assert [r.key for r in rows(session, customer.id, "payment_receipt")] == [f"payment-receipt:{invoice.id}"]


def test_a_charge_whose_outcome_was_unknown_and_then_declines_is_mailed_as_failed(
    session, factory, worker, mailbox, stripe
):
    customer = factory.customer()
    add_card(session, customer.id, DECLINES_OFF_SESSION, default=True)
    invoice = make_invoice(session, customer.id, 1800)
    stripe.set_fault("/v1/payment_intents", "error", count=1)

    settle_customer(session, customer.id)  # Stripe did not answer: unknown, nobody is told yet
    assert rows(session, customer.id, "payment_failed") == []
    settle_customer(session, customer.id)  # re-driven with the same key: declined, no other card

    [failed] = rows(session, customer.id, "payment_failed")
    assert failed.context["invoice_id"] == invoice.id
    worker.run_burst()
    [message] = mails(mailbox, customer.email, "Payment failed")
    assert "Visa ending 0341 declined on" in plain_text(message)


def test_the_customer_and_the_admin_see_which_emails_went_out(app, session, factory, worker, mailbox):
    admin = factory.admin()
    customer = factory.customer(email_receipts=False)
    credit(session, customer.id, "cash", 500)
    invoice = make_invoice(session, customer.id, 500)
    worker.run_burst()

    client = app.test_client()
    login(client, customer.email)
    page = client.get("/settings/notifications").get_data(as_text=True)
    assert f"Your Paydesk invoice {invoice.number}" in page
    assert f"Receipt: invoice {invoice.number} is paid" in page and "not sent (receipts off)" in page
    assert 'id="receipts"' in page and "checked" not in page
    response = client.post("/settings/notifications", data={
        "csrf_token": get_csrf(client, "/settings/notifications"), "receipts": "y"})
    assert response.status_code == 303
    session.expire_all()
    assert notifications.receipts_enabled(session, customer.id) is True

    admin_client = app.test_client()
    login(admin_client, admin.email, "admin-password-1")
    detail = admin_client.get(f"/admin/customers/{customer.id}").get_data(as_text=True)
    assert 'id="customer-emails"' in detail
    assert f"Your Paydesk invoice {invoice.number}" in detail and "skipped" in detail
