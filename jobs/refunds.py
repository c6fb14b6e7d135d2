"""Refund jobs: send the pending Stripe refunds of one request (e.g. a credit note's card part).

`jobs.hooks` wires app.billing.refunds' after-commit hook to `enqueue_refund_send`; a lost job or
a killed worker leaves the parts pending, and `jobs.stripe_events.reconcile_stripe_events` re-sends
them with the same idempotency keys."""

from app.billing.refunds import send_pending_refunds
from jobs.queue import enqueue
from jobs.runtime import job_session


def send_refunds_job(request_key: str) -> dict:
    with job_session() as session:
        parts = send_pending_refunds(session, request_key=request_key)
        return {"request_key": request_key, "statuses": [p.status for p in parts]}


def enqueue_refund_send(request_key: str) -> bool:
    return enqueue(send_refunds_job, request_key)

