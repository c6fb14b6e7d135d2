"""Foresight jobs: the periodic spending-limit check (alerts at 50/80/100 %, each once a month)."""

from datetime import datetime

from app.billing import spending_limits
from jobs.runtime import job_session


def check_spending_limits(now: datetime | None = None) -> dict[int, list[int]]:
    """Every customer with a limit: record and email the thresholds newly reached this month."""
    with job_session() as session:
        return spending_limits.check_all_spending_alerts(session, now)
