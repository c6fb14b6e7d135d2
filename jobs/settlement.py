"""Settlement jobs: thin wrappers around app.billing.settlement.

Why settlement cannot be lost (the sweep design)
-------------------------------------------------
Every funds-arrival path calls `request_settlement`, which writes a `settlement_requests` row in
the SAME transaction as the money (an outbox). Enqueuing the RQ job happens only after commit and
is best effort: Redis may be down, the job may be dropped, or the worker may be SIGKILLed mid-run.
None of that loses anything, because:

- `settle_customer_job` only clears the outbox row when its settlement completed and nobody asked
  again meanwhile (generation unchanged), so a killed or failed job leaves the row in place;
- `sweep_settlement_requests` (periodic, jobs/schedule.py, every 5 s, on its own `paydesk-recovery`
  queue, which every worker takes before the per-customer jobs: recovery never waits behind a
  backlog) settles every customer whose row is older than a few seconds (younger rows are normally
  being handled by their own job right now), every customer with a card attempt left `pending`
  (a worker died between "attempt recorded" and "outcome recorded": a charge still in flight holds
  the customer's lock and is skipped) and, backing off, `unknown` (Stripe timed out). The engine
  re-sends such attempts with the SAME idempotency key, so a re-drive never charges twice;
- the sweep uses `wait=False`: a customer whose settlement is running elsewhere is skipped (that run
  sees the request), so any number of sweeps and jobs may run concurrently; one sweep at a time
  does the work (a second one finds the sweep lock taken and returns at once, so sweeps enqueued
  while no worker was free cost nothing);
- all of it is idempotent: settling a customer with nothing to do changes nothing.
"""

import logging
from datetime import timedelta

from sqlalchemy import select, text

from app.billing.settlement import (
    SETTLEMENT_LOCK_CLASS,
    customers_with_unresolved_attempts,
    lock_connection,
    settle_balances_bulk,
    settle_customer,
)
from app.models import SettlementRequest
from app.models.base import utcnow
from jobs.runtime import job_session

log = logging.getLogger(__name__)
SWEEP_MIN_AGE = timedelta(seconds=5)  # a request younger than this is normally being settled by its own job
PENDING_ATTEMPT_MIN_AGE = timedelta(seconds=2)  # a live charge holds the lock; this only spares the try
UNKNOWN_ATTEMPT_MIN_AGE = timedelta(seconds=30)  # the provider did not answer: do not hammer it
SWEEP_BATCH = 1000
SWEEP_LOCK = (SETTLEMENT_LOCK_CLASS + 1, 0)  # one sweep at a time (key space next to the customers')
DRAIN_BATCH = 100  # customers one job settles set-based when requests pile up
DRAIN_MIN = 4  # fewer waiting requests are left to their own jobs


def settle_customer_job(customer_id: int) -> dict:
    """One customer's settlement, run by RQ after a request. Duplicate jobs coalesce: they wait
    for the running one and then find nothing requested. Then, when requests pile up behind it (a
    burst of arrivals: the other customers waiting when the run began, which its first statement
    reads), the job drains them (`drain_waiting_requests`)."""
    with job_session() as session:
        report = settle_customer(session, customer_id, only_if_requested=True, waiting_limit=DRAIN_BATCH)
        drained = drain_waiting_requests(session, report.waiting)
    return {"customer_id": customer_id, "rounds": report.rounds, "payments": len(report.payments),
            "paid_invoices": report.paid_invoice_ids, "busy": report.busy, "drained": drained}


def drain_waiting_requests(session, customer_ids: list[int]) -> int:
    """PostgreSQL: settle the balances of these other customers whose requests are waiting (at
    least DRAIN_MIN of them) in one set-based transaction (`settle_balances_bulk`: the same cost
    order, ledger keys and locks as the engine; customers being settled elsewhere or with an
    unresolved card attempt are skipped). Opportunistic: their own jobs are still queued and then
    find nothing requested; whatever it does not finish (cards) is left to them and to the sweep.
    Returns the number of customers it finished."""
    if len(customer_ids) < DRAIN_MIN or session.get_bind().dialect.name != "postgresql":
        return 0
    try:
        remaining = settle_balances_bulk(session, customer_ids)
    except Exception:
        log.exception("draining %d waiting settlement requests failed; their own jobs settle them", len(customer_ids))
        return 0
    return len(customer_ids) - len(remaining)


def settle_customers_job(customer_ids: list[int]) -> int:
    """Settle many customers in one job (bulk runs, e.g. after monthly invoicing); skips customers
    being settled elsewhere. On PostgreSQL the voucher/cash part runs set-based for the whole batch
    (`settle_balances_bulk`); customers with something left (cards) go through `settle_customer`."""
    settled = 0
    with job_session() as session, lock_connection(session) as lock_conn:
        if session.get_bind().dialect.name == "postgresql":
            remaining = settle_balances_bulk(session, customer_ids)
            settled += len(customer_ids) - len(remaining)
            customer_ids = remaining
        for customer_id in customer_ids:
            report = settle_customer(session, customer_id, wait=False, only_if_requested=True, lock_conn=lock_conn)
            settled += 0 if report.busy else 1
    return settled


def sweep_settlement_requests(min_age_seconds: float | None = None, limit: int = SWEEP_BATCH) -> int:
    """Settle every customer with a waiting request older than `min_age_seconds` (default 5 s) or
    an unresolved card attempt (`pending` after 2 s or `min_age_seconds`, `unknown` after 30 s).
    Safe at any frequency and concurrently with itself and the jobs. Returns the number of
    customers settled (0 when another sweep is running)."""
    if min_age_seconds is None:
        min_age, pending_age, unknown_age = SWEEP_MIN_AGE, PENDING_ATTEMPT_MIN_AGE, UNKNOWN_ATTEMPT_MIN_AGE
    else:
        min_age = pending_age = unknown_age = timedelta(seconds=min_age_seconds)
    settled = 0
    with job_session() as session, lock_connection(session) as lock_conn:
        if lock_conn is not None and not lock_conn.execute(
            text("SELECT pg_try_advisory_lock(:k, :c)"), {"k": SWEEP_LOCK[0], "c": SWEEP_LOCK[1]}
        ).scalar_one():
            return 0
        try:
            cutoff = utcnow() - min_age
            customer_ids = list(
                session.scalars(
                    select(SettlementRequest.customer_id)
                    .where(SettlementRequest.requested_at <= cutoff)
                    .order_by(SettlementRequest.requested_at)
                    .limit(limit)
                )
            )
            unresolved = customers_with_unresolved_attempts(session, pending_age, limit, unknown_older_than=unknown_age)
            # a charge left pending by a killed worker first: it is what blocks that customer
            customer_ids = unresolved + [c for c in customer_ids if c not in set(unresolved)]
            session.rollback()
            for customer_id in customer_ids:
                try:
                    report = settle_customer(session, customer_id, wait=False)
                except Exception:
                    log.exception("sweep: settling customer %s failed; next sweep retries", customer_id)
                    continue
                settled += 0 if report.busy else 1
        finally:
            if lock_conn is not None:
                lock_conn.execute(text("SELECT pg_advisory_unlock(:k, :c)"), {"k": SWEEP_LOCK[0], "c": SWEEP_LOCK[1]})
    if settled:
        log.info("settlement sweep: settled %d customer(s)", settled)
    return settled
