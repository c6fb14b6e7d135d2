"""Monthly invoicing job (cron "5 0 1 * *", see jobs/schedule.py): thin wrapper around app.billing.monthly."""

from sqlalchemy import select

from app.billing.monthly import issue_monthly_invoices as issue_for_period
from app.models import SettlementRequest
from jobs.queue import enqueue
from jobs.runtime import job_session

SETTLEMENT_BATCH = 100


def issue_monthly_invoices(period: str | None = None) -> dict:
    """Issue the usage invoices of `period` (default: the previous calendar month UTC), then enqueue
    the settlement of everyone now waiting in the outbox in batches (`settle_customers_job`, set-based
    for balances). Idempotent and safe to run concurrently with itself; the periodic sweep settles
    whatever a lost batch job leaves behind."""
    from jobs.foresight import check_spending_limits
    from jobs.settlement import settle_customers_job

    with job_session() as session:
        report = issue_for_period(session, period)
        waiting = list(session.scalars(select(SettlementRequest.customer_id).order_by(SettlementRequest.customer_id)))
    for start in range(0, len(waiting), SETTLEMENT_BATCH):
        enqueue(settle_customers_job, waiting[start : start + SETTLEMENT_BATCH])
    enqueue(check_spending_limits)  # a new month: limits start again (and late usage may have landed)
    return {"period": report.period, "invoices": report.invoices, "lines": report.lines,
            "settlement_batches": -(-len(waiting) // SETTLEMENT_BATCH)}
