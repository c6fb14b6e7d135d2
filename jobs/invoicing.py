"""Monthly invoicing job (cron "5 0 1 * *", see jobs/schedule.py): thin wrapper around app.billing.monthly."""

from app.billing.monthly import issue_monthly_invoices as issue_for_period
from jobs.runtime import job_session


def issue_monthly_invoices(period: str | None = None) -> dict:
    """Issue the usage invoices of `period` (default: the previous calendar month UTC).
    Idempotent and safe to run concurrently with itself."""
    with job_session() as session:
        report = issue_for_period(session, period)
    return {"period": report.period, "invoices": report.invoices, "lines": report.lines}
