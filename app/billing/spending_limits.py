"""Monthly spending limits (SPEC §16): the customer's own limit and an admin's ceiling, the alerts
at 50, 80 and 100 % of it, and the figure can-deploy checks.

"Spending" is the usage of the current calendar month (UTC) before tax, whether already invoiced
by hand or not, each deployment rounded like an invoice line. The effective limit is the lower of
the customer's limit and the admin's ceiling. Crossing it never stops or deletes anything: it
alerts and makes can-deploy refuse new deployments.

Alerts: each threshold at most once per customer and month — a `spending_alerts` row unique on
(customer, month, threshold) is inserted first, and only the transaction that inserted it queues
the email (notification key `spending-alert:<customer>:<month>:<threshold>`), so reruns and
concurrent checks never send twice. When one check crosses several thresholds at once, all are
recorded and one email names the highest.
"""

import logging
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.billing.audit import record_audit
from app.billing.foresight import SpendingStatus, customer_forecast, format_day
from app.billing.money import format_money
from app.billing.notifications import queue_notification
from app.models import User
from app.models.base import utcnow
from app.models.foresight import ALERT_THRESHOLDS, SpendingAlert, SpendingLimit
from app.models.usage import Deployment

log = logging.getLogger(__name__)
MAX_LIMIT_CENTS = 100_000_000_00  # 100 million in major units: far above any real month


class SpendingLimitError(Exception):
    """Base of limit errors; `str(error)` is fit for the person who typed the value."""


class InvalidLimit(SpendingLimitError):
    pass


class UnknownCustomer(SpendingLimitError):
    def __init__(self):
        super().__init__("No such customer.")


def _check_amount(cents: int | None) -> None:
    if cents is not None and not 0 <= cents <= MAX_LIMIT_CENTS:
        raise InvalidLimit(f"A limit is between {format_money(0)} and {format_money(MAX_LIMIT_CENTS)}.")


def _locked_row(session: Session, customer_id: int) -> SpendingLimit:
    customer = session.scalar(select(User).where(User.id == customer_id).with_for_update())
    if customer is None or customer.is_admin:
        session.rollback()
        raise UnknownCustomer()
    row = session.get(SpendingLimit, customer_id)
    if row is None:
        row = SpendingLimit(customer_id=customer_id)
        session.add(row)
    return row


def set_customer_limit(session: Session, customer_id: int, limit_cents: int | None) -> SpendingLimit:
    """The customer's own monthly limit (None removes it). Commits."""
    _check_amount(limit_cents)
    row = _locked_row(session, customer_id)
    row.customer_limit_cents = limit_cents
    row.updated_at = utcnow()
    session.commit()
    return row


def set_admin_ceiling(session: Session, actor_id: int, customer_id: int, ceiling_cents: int | None) -> SpendingLimit:
    """An admin's cap on the customer's limit (None removes it). Audit-logged. Commits."""
    _check_amount(ceiling_cents)
    row = _locked_row(session, customer_id)
    before = {"admin_ceiling_cents": row.admin_ceiling_cents}
    row.admin_ceiling_cents = ceiling_cents
    row.updated_at = utcnow()
    record_audit(session, actor_id, "customer.spending_ceiling", "customer", customer_id, before,
                 {"admin_ceiling_cents": ceiling_cents})
    session.commit()
    return row


def spending_limit(session: Session, customer_id: int) -> SpendingLimit | None:
    return session.get(SpendingLimit, customer_id)


def spending_status(session: Session, customer_id: int, now: datetime | None = None) -> SpendingStatus | None:
    return customer_forecast(session, customer_id, now).spending


# ------------------------------------------------------------------ alerts ---
def _insert(session: Session):
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def check_spending_alerts(session: Session, customer_id: int, now: datetime | None = None) -> list[int]:
    """Record (and queue the email for) every threshold the customer's spending reached this month
    and was not alerted about yet. Returns the thresholds newly recorded. Does not commit."""
    limit = session.get(SpendingLimit, customer_id)
    if limit is None or limit.effective_cents is None:
        return []
    now = (now or utcnow()).astimezone(UTC)
    forecast = customer_forecast(session, customer_id, now)
    status = forecast.spending
    if status is None or status.reached_threshold is None:
        return []
    reached = [t for t in ALERT_THRESHOLDS if t <= status.reached_threshold]
    inserted = []
    for threshold in reached:
        row_id = session.execute(
            _insert(session)(SpendingAlert)
            .values(customer_id=customer_id, period=forecast.period, threshold=threshold,
                    spent_cents=status.spent_cents, limit_cents=status.limit_cents, created_at=now)
            .on_conflict_do_nothing(index_elements=["customer_id", "period", "threshold"])
            .returning(SpendingAlert.id)
        ).scalar_one_or_none()
        if row_id is not None:
            inserted.append(threshold)
    if inserted:
        highest = max(inserted)
        subject = (f"You have reached your monthly spending limit of {format_money(status.limit_cents)}"
                   if highest >= 100 else
                   f"You have used {highest} % of your monthly spending limit of {format_money(status.limit_cents)}")
        queue_notification(
            session, user_id=customer_id, kind="spending_alert",
            key=f"spending-alert:{customer_id}:{forecast.period}:{highest}", subject=subject,
            template="spending_alert",
            context={
                "threshold": highest,
                "limit": format_money(status.limit_cents),
                "spent": format_money(status.spent_cents),
                "projected": format_money(status.projected_cents),
                "month_end": format_day(forecast.month_end, now),
                "period": forecast.period,
                "capped_by_admin": status.capped_by_admin,
            },
        )
    return inserted


def customers_with_limits_and_usage(session: Session) -> list[int]:
    """Customers with a limit who have (or had this month) a deployment: the only ones who can cross it."""
    with_limit = select(SpendingLimit.customer_id).where(
        (SpendingLimit.customer_limit_cents.is_not(None)) | (SpendingLimit.admin_ceiling_cents.is_not(None))
    )
    with_usage = select(Deployment.customer_id).where(Deployment.customer_id.in_(with_limit)).distinct()
    return sorted(session.scalars(with_usage))


def check_all_spending_alerts(session: Session, now: datetime | None = None) -> dict[int, list[int]]:
    """The periodic check: every customer with a limit, one transaction each. Commits."""
    now = now or utcnow()
    alerted = {}
    for customer_id in customers_with_limits_and_usage(session):
        try:
            thresholds = check_spending_alerts(session, customer_id, now)
            session.commit()
        except Exception:
            session.rollback()
            log.exception("spending alert check failed for customer %s", customer_id)
            continue
        if thresholds:
            alerted[customer_id] = thresholds
    return alerted
