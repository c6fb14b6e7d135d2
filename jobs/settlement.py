"""Settlement jobs: thin wrappers around app.billing.settlement.

Why settlement cannot be lost (the sweep design)
-------------------------------------------------
Every funds-arrival path calls `request_settlement`, which writes a `settlement_requests` row in
the SAME transaction as the money (an outbox). Enqueuing the RQ job happens only after commit and
is best effort: Redis may be down, the job may be dropped, or the worker may be SIGKILLed mid-run.
None of that loses anything, because:

- `settle_customer_job` only clears the outbox row when its settlement completed and nobody asked
  again meanwhile (generation unchanged), so a killed or failed job leaves the row in place;
- `sweep_settlement_requests` (periodic, jobs/schedule.py, every 60 s) settles every customer whose
  row is older than a few seconds (younger rows are normally being handled by their own job right
  now), and every customer with a card attempt left `pending`/`unknown` (a worker died between
  "attempt recorded" and "outcome recorded", or Stripe timed out). The engine re-sends such
  attempts with the SAME idempotency key, so a re-drive never charges twice;
- the sweep uses `wait=False`: a customer whose settlement is running elsewhere is skipped (that run
  sees the request), so any number of sweeps and jobs may run concurrently;
- all of it is idempotent: settling a customer with nothing to do changes nothing.
"""

import logging
from datetime import timedelta

from sqlalchemy import select

from app.billing.settlement import (
    customers_with_unresolved_attempts,
    lock_connection,
    settle_balances_bulk,
    settle_customer,
)
from app.models import SettlementRequest
from app.models.base import utcnow
from jobs.runtime import job_session

log = logging.getLogger(__name__)
SWEEP_MIN_AGE = timedelta(seconds=5)
SWEEP_BATCH = 1000


def settle_customer_job(customer_id: int) -> dict:
    """One customer's settlement, run by RQ after a request. Duplicate jobs coalesce: they wait
    for the running one and then find nothing requested."""
    with job_session() as session:
        report = settle_customer(session, customer_id, only_if_requested=True)
    return {"customer_id": customer_id, "rounds": report.rounds, "payments": len(report.payments),
            "paid_invoices": report.paid_invoice_ids, "busy": report.busy}


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
    an unresolved card attempt. Safe at any frequency and concurrently with itself and the jobs.
    Returns the number of customers settled."""
    min_age = SWEEP_MIN_AGE if min_age_seconds is None else timedelta(seconds=min_age_seconds)
    settled = 0
    with job_session() as session:
        cutoff = utcnow() - min_age
        customer_ids = list(
            session.scalars(
                select(SettlementRequest.customer_id)
                .where(SettlementRequest.requested_at <= cutoff)
                .order_by(SettlementRequest.requested_at)
                .limit(limit)
            )
        )
        for customer_id in customers_with_unresolved_attempts(session, min_age, limit):
            if customer_id not in customer_ids:
                customer_ids.append(customer_id)
        session.rollback()
        for customer_id in customer_ids:
            try:
                report = settle_customer(session, customer_id, wait=False)
            except Exception:
                log.exception("sweep: settling customer %s failed; next sweep retries", customer_id)
                continue
            settled += 0 if report.busy else 1
    if settled:
        log.info("settlement sweep: settled %d customer(s)", settled)
    return settled
