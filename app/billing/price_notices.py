"""Price-change notices (SPEC §16): a scheduled price is announced to the customers it affects.

Who is told: the customers who will create deployments of the plan — defined as customers with a
deployment of that plan that is still live (in progress, running or suspended) or that had a
lifecycle event in the last `LOOKBACK_DAYS` days. The admin sees that number before confirming.

What they get, once per price version: a `price_change_notices` row (unique per version and
customer; the dashboard shows it until the price takes effect) and one email, both written in the
transaction that records the price version. They compare what a month (`MONTH_HOURS` hours) of a
new deployment of the plan costs before and after, before tax; existing deployments keep the price
they were created with (their snapshot), and the notice says so. A price effective immediately is
not announced (there is no "before").
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.billing.money import format_money, format_unit_price, usage_amount_cents
from app.billing.notifications import queue_notification
from app.models import User
from app.models.base import utcnow
from app.models.foresight import PriceChangeNotice
from app.models.usage import Deployment, Plan, PlanPrice

LOOKBACK_DAYS = 90
MONTH_HOURS = 730
AUDIENCE = (f"customers with a deployment of this plan that is running, suspended or being created, "
            f"or that had any activity in the last {LOOKBACK_DAYS} days")


def monthly_cost_cents(hourly_price: Decimal) -> int:
    """A month (730 hours) of one deployment at this hourly price, rounded like an invoice line."""
    return usage_amount_cents(Decimal(hourly_price), MONTH_HOURS * 3600)


def affected_customer_ids(session: Session, plan_id: int, now: datetime | None = None) -> list[int]:
    now = now or utcnow()
    query = (
        select(Deployment.customer_id).distinct()
        .join(User, User.id == Deployment.customer_id)
        .where(Deployment.plan_id == plan_id, User.is_admin.is_(False),
               Deployment.state.in_(("in_progress", "running", "suspended"))
               | (Deployment.last_event_at >= now - timedelta(days=LOOKBACK_DAYS)))
    )
    return sorted(session.scalars(query))


def _insert(session: Session):
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def _when(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return f"{moment.day} {moment:%B %Y}, {moment:%H:%M} UTC"


def announce_price_change(session: Session, version: PlanPrice, before_price: Decimal | None,
                          now: datetime | None = None) -> int:
    """Record the notice and queue the email for every affected customer not told about this
    version yet. Returns how many were told now. Does not commit."""
    now = now or utcnow()
    if version.effective_at <= now or before_price is None:
        return 0
    audience = affected_customer_ids(session, version.plan_id, now)
    if not audience:
        return 0
    plan = session.get(Plan, version.plan_id)
    before_cents, after_cents = monthly_cost_cents(before_price), monthly_cost_cents(version.hourly_price)
    told = 0
    for customer_id in audience:
        row_id = session.execute(
            _insert(session)(PriceChangeNotice)
            .values(plan_price_id=version.id, customer_id=customer_id, before_monthly_cents=before_cents,
                    after_monthly_cents=after_cents, created_at=now)
            .on_conflict_do_nothing(index_elements=["plan_price_id", "customer_id"])
            .returning(PriceChangeNotice.id)
        ).scalar_one_or_none()
        if row_id is None:
            continue
        told += 1
        queue_notification(
            session, user_id=customer_id, kind="price_change", key=f"price-change:{version.id}:{customer_id}",
            subject=f"New prices from {_when(version.effective_at)}: {plan.name}",
            template="price_change",
            context={
                "effective_at": _when(version.effective_at),
                "plans": [{
                    "name": plan.name,
                    "before_hourly": format_unit_price(before_price),
                    "after_hourly": format_unit_price(version.hourly_price),
                    "before_monthly": format_money(before_cents),
                    "after_monthly": format_money(after_cents),
                }],
                "month_hours": MONTH_HOURS,
                "audience": AUDIENCE,
            },
        )
    session.flush()
    return told


@dataclass(frozen=True)
class UpcomingPrice:
    plan_name: str
    effective_at: datetime
    after_hourly: Decimal
    before_monthly_cents: int
    after_monthly_cents: int

    @property
    def effective_text(self) -> str:
        return _when(self.effective_at)


def upcoming_price_notices(session: Session, customer_id: int, now: datetime | None = None) -> list[UpcomingPrice]:
    """The scheduled prices this customer was told about that have not taken effect yet."""
    now = now or utcnow()
    rows = session.execute(
        select(Plan.name, PlanPrice.effective_at, PlanPrice.hourly_price, PriceChangeNotice.before_monthly_cents,
               PriceChangeNotice.after_monthly_cents)
        .join(PlanPrice, PlanPrice.id == PriceChangeNotice.plan_price_id)
        .join(Plan, Plan.id == PlanPrice.plan_id)
        .where(PriceChangeNotice.customer_id == customer_id, PlanPrice.effective_at > now)
        .order_by(PlanPrice.effective_at, Plan.name)
    ).all()
    return [UpcomingPrice(name, effective_at, Decimal(after), int(before), int(after_monthly))
            for name, effective_at, after, before, after_monthly in rows]
