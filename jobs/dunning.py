"""Dunning jobs (SPEC §10). `run_dunning` is periodic (jobs/schedule.py) and safe at any frequency
and concurrently: every email and platform event is reserved in the database before a job sends it,
and anything a lost or failed job left behind is picked up by the next run."""

import logging
from datetime import datetime

from rq import Retry

from app.billing import dunning
from app.models.base import utcnow
from jobs.mail import EMAIL_RETRY
from jobs.queue import enqueue
from jobs.runtime import job_session

log = logging.getLogger(__name__)

# The receiver failing is retried by RQ with these delays (seconds), and by run_dunning's sweep
# (app.platform_notify.BACKOFF_SECONDS) when RQ's retries are exhausted or the job was lost.
WEBHOOK_RETRY = Retry(max=6, interval=[30, 120, 600, 1800, 3600, 3 * 3600])


def run_dunning(now: datetime | None = None) -> dunning.DunningRun:
    """Reminders, deletion warnings, deletion at grace end, runway warnings; then enqueue the sends."""
    with job_session() as session:
        run = dunning.run_dunning(session, now)
    for notice_id in dict.fromkeys(run.notice_ids):
        enqueue(send_dunning_notice, notice_id, retry=EMAIL_RETRY)
    for delivery_id in run.delivery_ids:
        enqueue(deliver_platform_webhook, delivery_id, retry=WEBHOOK_RETRY)
    return run


def send_dunning_notice(notice_id: int) -> str:
    """Send one reserved notice exactly once: claim it, send, mark it sent. A paid debt cancels it.
    Raises on SMTP failure (after putting the notice back to pending) so RQ retries it."""
    from app.mail import send_message

    with job_session() as session:
        notice = dunning.claim_notice(session, notice_id, utcnow())
        if notice is None:
            return "skipped"
        invoices = dunning.still_relevant_invoices(session, notice)
        if dunning.notice_is_obsolete(session, notice, invoices, utcnow()):
            dunning.mark_cancelled(session, notice_id, utcnow())
            return "cancelled"
        try:
            send_message(dunning.compose_notice(session, notice, invoices))
        except Exception as exc:
            session.rollback()
            dunning.mark_failed(session, notice_id, utcnow(), f"{type(exc).__name__}: {exc}")
            log.warning("dunning notice %s not sent, will retry: %s", notice_id, exc)
            raise
        dunning.mark_sent(session, notice_id, utcnow())
        return "sent"


def enqueue_platform_delivery(delivery_id: int) -> bool:
    return enqueue(deliver_platform_webhook, delivery_id, retry=WEBHOOK_RETRY)


def deliver_platform_webhook(delivery_id: int) -> bool:
    """POST one platform event; raises when the receiver fails so RQ retries it."""
    from app.platform_notify import deliver

    with job_session() as session:
        return deliver(session, delivery_id)
