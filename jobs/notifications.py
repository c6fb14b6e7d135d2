"""Sending customer notifications (app.billing.notifications).

`jobs.hooks` registers `enqueue_notification_sends` as the after-commit sender of every
notification a transaction queued (the billing layer never imports jobs). Redis may be down or
lose the job: `sweep_notifications` (periodic, jobs/schedule.py) enqueues whatever is still pending
past its time. `send_notification` claims the row first, so running it twice sends once.
"""

import logging

from app.billing import notifications
from app.models.base import utcnow
from jobs.mail import EMAIL_RETRY
from jobs.queue import enqueue, enqueue_calls, enqueue_settlement, settlement_call
from jobs.runtime import job_session

log = logging.getLogger(__name__)
SWEEP_BATCH = 100
# Bulk writers (monthly invoicing, bulk settlement) hand over at most this many ids to the
# after-commit hook; larger runs are left to the sweep, which sends them in batches.
ENQUEUE_LIMIT = 1000


def enqueue_notification_sends(notification_ids: list[int]) -> None:
    """Registered with app.billing.notifications by jobs.hooks: called after a commit with the ids
    of the notifications it queued. Never raises (the sweep catches up on a failed enqueue)."""
    if len(notification_ids) > ENQUEUE_LIMIT:
        log.info("%d notifications left to the sweep", len(notification_ids))
        return
    enqueue_calls(_send_calls(notification_ids))


def _send_calls(notification_ids: list[int]) -> list[tuple]:
    if len(notification_ids) == 1:
        return [(send_notification, (notification_ids[0],), {"retry": EMAIL_RETRY})]
    return [(send_notifications, (notification_ids[start : start + SWEEP_BATCH],), {})
            for start in range(0, len(notification_ids), SWEEP_BATCH)]


def enqueue_sends_and_settlements(notification_ids: list[int], customer_ids: list[int]) -> None:
    """After a commit that queued notifications and asked for settlements: the settlement jobs (as
    `enqueue_settlement` enqueues them) and the sends in one Redis round trip. Never raises; if it
    fails, the settlement and notification sweeps catch up, as with separate enqueues."""
    settlements = [settlement_call(customer_id) for customer_id in customer_ids]
    if len(notification_ids) > ENQUEUE_LIMIT:
        log.info("%d notifications left to the sweep", len(notification_ids))
        enqueue_calls(settlements)
        return
    enqueue_calls(settlements + _send_calls(notification_ids))


# app.billing.notifications hands the settlement jobs of the same commit to this sender as well
# (one round trip for both) when settlements are enqueued by `enqueue_settlement`.
enqueue_notification_sends.batches_with = enqueue_settlement
enqueue_notification_sends.with_settlements = enqueue_sends_and_settlements


def send_notification(notification_id: int) -> str:
    """Send one notification exactly once: claim it, render it, send it, mark it sent. Returns what
    happened (sent, skipped, cancelled, or 'claimed elsewhere' when another job has it or it is done).
    Raises on SMTP failure (after putting it back to pending) so RQ retries it."""
    from flask import has_app_context

    from app.mail import send_message
    from jobs.runtime import worker_app

    if not has_app_context():
        with worker_app().app_context():
            return send_notification(notification_id)
    with job_session() as session:
        notification = notifications.claim_notification(session, notification_id, utcnow())
        if notification is None:
            return "claimed elsewhere"
        decision = notifications.decide(session, notification)
        try:
            message = notifications.compose(session, notification) if decision == "send" else None
            if message is not None:
                send_message(message)
        except Exception as exc:
            session.rollback()
            notifications.mark_failed(session, notification_id, utcnow(), f"{type(exc).__name__}: {exc}")
            log.warning("notification %s not sent, will retry: %s", notification_id, exc)
            raise
        if message is None:
            status = "cancelled" if decision == "send" else decision
            session.rollback()
            notifications.mark_not_sent(session, notification_id, status, utcnow())
            return status
        session.rollback()
        notifications.mark_sent(session, notification_id, message["To"], utcnow())
        return "sent"


def send_notifications(notification_ids: list[int]) -> dict:
    """Send a batch (bulk runs); one failure does not stop the others (their rows stay pending and
    the sweep retries them)."""
    outcome: dict[str, int] = {}
    for notification_id in notification_ids:
        try:
            status = send_notification(notification_id)
        except Exception:
            status = "failed"
        outcome[status] = outcome.get(status, 0) + 1
    return outcome


def sweep_notifications(limit: int = 2000) -> int:
    """Periodic: enqueue every notification still pending past its time (lost job, Redis down,
    failed send whose retry time came, expired claim). Safe at any frequency."""
    with job_session() as session:
        ids = notifications.due_notifications(session, utcnow(), limit=limit)
    for start in range(0, len(ids), SWEEP_BATCH):
        enqueue(send_notifications, ids[start : start + SWEEP_BATCH])
    if ids:
        log.info("notification sweep: %d notification(s) enqueued", len(ids))
    return len(ids)
