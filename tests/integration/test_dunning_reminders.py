"""Weekly reminders (SPEC §10) against real PostgreSQL, Redis, an rq worker and the SMTP server."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.models.base import utcnow
from app.models.dunning import DunningNotice
from jobs.dunning import run_dunning, send_dunning_notice
from tests.conftest import free_port
from tests.integration.dunning_helpers import (
    at,
    open_invoice,
    pay,
    pdf_attachments,
    plain_text,
    queued_jobs,
    travel,
)

pytestmark = pytest.mark.integration

START = at("2027-03-01T09:00:00")


def _to(mailbox, email):
    """Dunning mails only (invoice-issued and receipt notifications are tested elsewhere)."""
    return [m for m in mailbox.messages if m["To"] == email and m["Message-ID"].startswith("<dunning-")]


def test_unpaid_customer_gets_one_reminder_a_week_with_its_invoice_pdfs_and_none_after_paying(
    app, session, factory, worker, mailbox
):
    customer = factory.customer(name="Ada Debtor")
    first = open_invoice(session, customer, 12_345, START - timedelta(days=1))
    second = None
    for day in range(42):
        now = START + timedelta(days=day)
        if day == 9:
            second = open_invoice(session, customer, 6_789, now - timedelta(hours=3))
        if day == 30:
            pay(session, first, now - timedelta(hours=1))
            pay(session, second, now - timedelta(hours=1))
        with travel(now):
            run_dunning()
            run_dunning()  # running again the same day changes nothing
        if queued_jobs(app):
            worker.run_burst()

    messages = _to(mailbox, customer.email)
    assert len(messages) == 5
    expected = [[first], [first], [first, second], [first, second], [first, second]]
    base_url = app.config["BASE_URL"]
    for message, invoices in zip(messages, expected, strict=True):
        pdfs = pdf_attachments(message)
        assert set(pdfs) == {f"invoice-{inv.number}.pdf" for inv in invoices}
        for inv in invoices:
            assert inv.number in pdfs[f"invoice-{inv.number}.pdf"]
            assert inv.number in plain_text(message)
            assert f"{base_url}/invoices/{inv.id}" in plain_text(message)
        assert "Payment reminder" in message["Subject"]

    notices = session.scalars(
        select(DunningNotice).where(DunningNotice.customer_id == customer.id).order_by(DunningNotice.id)
    ).all()
    assert [(n.kind, n.status, n.to_email) for n in notices] == [("reminder", "sent", customer.email)] * 5
    assert [n.reserved_at for n in notices] == [START + timedelta(days=7 * week) for week in range(5)]
    assert all(n.sent_at is not None for n in notices)


def test_concurrent_runs_reserve_and_send_a_single_reminder(app, session, factory, worker, mailbox):
    customer = factory.customer()
    open_invoice(session, customer, 5_000, START - timedelta(days=2))
    errors = []

    def run():
        try:
            with app.app_context():
                run_dunning(now=START)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    worker.run_burst()

    assert len(_to(mailbox, customer.email)) == 1
    notices = session.scalars(select(DunningNotice).where(DunningNotice.customer_id == customer.id)).all()
    assert [(n.kind, n.status) for n in notices] == [("reminder", "sent")]


def test_smtp_down_the_reminder_is_retried_later_not_lost_and_not_duplicated(
    app, session, factory, worker, mailbox
):
    from rq.registry import ScheduledJobRegistry

    from jobs.queue import get_queue

    customer = factory.customer()
    now = utcnow()  # real time: the worker subprocess records the failure on the real clock
    invoice = open_invoice(session, customer, 4_200, now - timedelta(days=2))
    smtp_port = worker.env["SMTP_PORT"]
    worker.env["SMTP_PORT"] = str(free_port())  # nothing listens there
    run_dunning()
    worker.run_burst()

    notice = session.scalar(select(DunningNotice).where(DunningNotice.customer_id == customer.id))
    assert (notice.status, notice.attempts, notice.sent_at) == ("pending", 1, None)
    assert "refused" in notice.last_error.lower()
    assert _to(mailbox, customer.email) == []
    queue = get_queue()
    scheduled = [queue.fetch_job(job_id).func_name for job_id in ScheduledJobRegistry(queue=queue).get_job_ids()]
    assert scheduled.count("jobs.dunning.send_dunning_notice") == 1  # RQ's own retry is scheduled

    # Before its retry time nothing is enqueued again; once it has come, the next run finds it.
    run_dunning()
    assert queued_jobs(app) == 0
    worker.env["SMTP_PORT"] = smtp_port
    with travel(notice.next_attempt_at + timedelta(seconds=1)):
        run_dunning()
    worker.run_burst()
    messages = _to(mailbox, customer.email)
    assert len(messages) == 1
    assert set(pdf_attachments(messages[0])) == {f"invoice-{invoice.number}.pdf"}
    session.refresh(notice)
    assert (notice.status, notice.attempts) == ("sent", 2)

    # RQ's scheduled retry (or any duplicate job) finds it sent; later runs in the week send nothing.
    assert send_dunning_notice(notice.id) == "skipped"
    for day in (1, 3, 6):
        with travel(now + timedelta(days=day)):
            run_dunning()
        if queued_jobs(app):
            worker.run_burst()
    assert len(_to(mailbox, customer.email)) == 1


def test_a_reminder_reserved_before_the_payment_is_cancelled_instead_of_sent(app, session, factory, mailbox):
    customer = factory.customer()
    invoice = open_invoice(session, customer, 900, START - timedelta(days=2))
    with travel(START):
        run = run_dunning()
    assert len(run.notice_ids) == 1
    pay(session, invoice, START + timedelta(minutes=1))

    assert send_dunning_notice(run.notice_ids[0]) == "cancelled"
    assert _to(mailbox, customer.email) == []
    assert session.get(DunningNotice, run.notice_ids[0]).status == "cancelled"


def test_a_fresh_invoice_waits_for_settlement_before_the_first_reminder(app, session, factory):
    customer = factory.customer()
    open_invoice(session, customer, 900, START - timedelta(minutes=10))
    with travel(START):
        assert run_dunning().notice_ids == []
    with travel(START + timedelta(hours=1)):
        assert len(run_dunning().notice_ids) == 1
