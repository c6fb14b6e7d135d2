"""Plans and their price versions (SPEC §6). Admin actions, audit-logged.

A price change never updates a row: it appends a `PlanPrice` version with its effective time.
Deployments snapshot the price in force when they were created (app.billing.usage), so old
deployments keep their price and new ones get the new one.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.billing.audit import record_audit
from app.billing.money import InvalidAmount
from app.billing.money_input import parse_unit_price
from app.billing.usage import price_at
from app.models.base import utcnow
from app.models.usage import PLAN_KINDS, Plan, PlanPrice, plan_name_for


class PricingError(Exception):
    """Base of pricing errors; the message is fit for the admin."""


class InvalidPrice(PricingError):
    pass


class PlanExists(PricingError):
    pass


class InvalidPlan(PricingError):
    pass


def parse_hourly_price(value) -> Decimal:
    """An hourly price: text typed by an admin goes through the money-input door
    (app.billing.money_input); a Decimal from code is checked against the same rules.
    Zero or more, at most 6 decimal places, at most HOURLY_PRICE_MAX."""
    if isinstance(value, Decimal):
        try:
            return parse_unit_price(_plain(value), locale="en_US")
        except InvalidAmount as exc:
            raise InvalidPrice(str(exc)) from None
    try:
        return parse_unit_price(value)
    except InvalidAmount as exc:
        raise InvalidPrice(str(exc)) from None


def _plain(value: Decimal) -> str:
    if not value.is_finite():
        return "NaN"
    return format(value, "f")


@dataclass(frozen=True)
class PlanRow:
    plan: Plan
    current: PlanPrice | None
    upcoming: PlanPrice | None


def list_plans(session: Session, now: datetime | None = None) -> list[PlanRow]:
    now = now or utcnow()
    rows = []
    for plan in session.scalars(select(Plan).order_by(Plan.kind, Plan.public_ip, Plan.id)):
        current = price_at(session, plan.id, now)
        upcoming = session.scalar(
            select(PlanPrice)
            .where(PlanPrice.plan_id == plan.id, PlanPrice.effective_at > now)
            .order_by(PlanPrice.effective_at)
            .limit(1)
        )
        rows.append(PlanRow(plan, current, upcoming))
    return rows


def price_history(session: Session, plan_id: int) -> list[PlanPrice]:
    return list(
        session.scalars(
            select(PlanPrice)
            .where(PlanPrice.plan_id == plan_id)
            .order_by(PlanPrice.effective_at.desc(), PlanPrice.id.desc())
        )
    )


def create_plan(
    session: Session,
    actor_id: int | None,
    *,
    kind: str,
    size: str,
    public_ip: bool,
    hourly_price,
    effective_at: datetime | None = None,
) -> Plan:
    """Create a plan with its first price version; commits."""
    size = (size or "").strip().lower()
    if kind not in PLAN_KINDS:
        raise InvalidPlan(f"Kind must be one of {', '.join(PLAN_KINDS)}.")
    if not size or not size.replace("_", "").isalnum() or len(size) > 20:
        raise InvalidPlan("Size must be a short word such as small, medium or large.")
    price = parse_hourly_price(hourly_price)
    name = plan_name_for(kind, size, public_ip)
    if session.scalar(select(Plan.id).where(Plan.name == name)) is not None:
        raise PlanExists(f"Plan {name} already exists.")
    plan = Plan(name=name, kind=kind, size=size, public_ip=public_ip)
    session.add(plan)
    try:
        session.flush()
        version = PlanPrice(plan_id=plan.id, hourly_price=price, effective_at=effective_at or utcnow(),
                            created_by=actor_id)
        session.add(version)
        session.flush()
        record_audit(session, actor_id, "plan.create", "plan", plan.id, None,
                     {"name": name, "hourly_price": str(price), "effective_at": version.effective_at.isoformat()})
        session.commit()
    except IntegrityError:
        session.rollback()
        raise PlanExists(f"Plan {name} already exists.") from None
    return plan


@dataclass(frozen=True)
class PriceChangePreview:
    """What confirming a price change will do: the admin sees it before confirming."""

    plan: Plan
    hourly_price: Decimal
    effective_at: datetime
    before_price: Decimal | None
    customers_told: int  # 0 when it takes effect at once (nothing to announce)
    before_monthly_cents: int | None
    after_monthly_cents: int

    @property
    def scheduled(self) -> bool:
        return self.customers_told > 0 or self.effective_at > utcnow()


def preview_price_change(session: Session, plan_id: int, hourly_price, effective_at: datetime | None = None,
                         now: datetime | None = None) -> PriceChangePreview:
    """Validate a price change and count the customers it will be announced to. Writes nothing."""
    from app.billing.price_notices import affected_customer_ids, monthly_cost_cents

    now = now or utcnow()
    plan = session.get(Plan, plan_id)
    if plan is None:
        raise InvalidPlan("No such plan.")
    price = parse_hourly_price(hourly_price)
    effective_at = effective_at or now
    before = price_at(session, plan.id, effective_at)
    told = len(affected_customer_ids(session, plan.id, now)) if effective_at > now and before is not None else 0
    return PriceChangePreview(plan, price, effective_at, before.hourly_price if before else None, told,
                              monthly_cost_cents(before.hourly_price) if before else None, monthly_cost_cents(price))


def change_price(
    session: Session, actor_id: int | None, plan_id: int, hourly_price, effective_at: datetime | None = None
) -> PlanPrice:
    """Append a new price version (effective now unless given); commits. Existing deployments keep
    their snapshot price. A price scheduled for later is announced, in the same transaction, to the
    customers it affects (app.billing.price_notices)."""
    from app.billing.price_notices import announce_price_change

    plan = session.get(Plan, plan_id)
    if plan is None:
        raise InvalidPlan("No such plan.")
    price = parse_hourly_price(hourly_price)
    now = utcnow()
    effective_at = effective_at or now
    before = price_at(session, plan.id, effective_at)
    version = PlanPrice(plan_id=plan.id, hourly_price=price, effective_at=effective_at, created_by=actor_id)
    session.add(version)
    session.flush()
    record_audit(
        session,
        actor_id,
        "plan.price_change",
        "plan",
        plan.id,
        {"hourly_price": str(before.hourly_price) if before else None},
        {"hourly_price": str(price), "effective_at": effective_at.isoformat(), "price_version_id": version.id},
    )
    announce_price_change(session, version, before.hourly_price if before else None, now)
    session.commit()
    return version


class PriceAlreadyInEffect(PricingError):
    def __init__(self):
        super().__init__("This price is already in effect (or no longer exists); it cannot be cancelled.")


def cancel_scheduled_price(session: Session, actor_id: int | None, plan_id: int, version_id: int,
                           now: datetime | None = None) -> PlanPrice:
    """Withdraw a price version that has not taken effect yet; audited; commits.

    The version is removed in one guarded statement (`effective_at > now`), so a version that took
    effect meanwhile is never touched: no deployment can have snapshotted a price that was never in
    force, and nothing else refers to a version. Raises PriceAlreadyInEffect otherwise."""
    now = now or utcnow()
    version = session.scalar(
        select(PlanPrice).where(PlanPrice.id == version_id, PlanPrice.plan_id == plan_id).with_for_update()
    )
    if version is None or version.effective_at <= now:
        session.rollback()
        raise PriceAlreadyInEffect()
    snapshot = {"hourly_price": str(version.hourly_price), "effective_at": version.effective_at.isoformat(),
                "price_version_id": version.id}
    session.expunge(version)  # handed back detached, with its values, after the row is gone
    deleted = session.execute(
        delete(PlanPrice).where(PlanPrice.id == version.id, PlanPrice.effective_at > now)
    ).rowcount
    if deleted != 1:
        session.rollback()
        raise PriceAlreadyInEffect()
    record_audit(session, actor_id, "plan.price_cancel", "plan", plan_id, snapshot, {"cancelled": True})
    session.commit()
    return version


DEMO_PRICES = {
    ("vm", "small"): Decimal("0.010000"),
    ("vm", "medium"): Decimal("0.040000"),
    ("vm", "large"): Decimal("0.160000"),
    ("k8s", "small"): Decimal("0.100000"),
    ("k8s", "medium"): Decimal("0.300000"),
    ("k8s", "large"): Decimal("0.900000"),
}
PUBLIC_IP_SURCHARGE = Decimal("0.005000")
DEMO_PRICES_SINCE = datetime(2020, 1, 1, tzinfo=UTC)


def ensure_demo_plans(session: Session) -> int:
    """Idempotent: create the 12 standard plans that do not exist yet. Returns how many were created."""
    created = 0
    for (kind, size), price in DEMO_PRICES.items():
        for public_ip in (False, True):
            if session.scalar(select(Plan.id).where(Plan.name == plan_name_for(kind, size, public_ip))) is None:
                create_plan(session, None, kind=kind, size=size, public_ip=public_ip,
                            hourly_price=price + (PUBLIC_IP_SURCHARGE if public_ip else 0),
                            effective_at=DEMO_PRICES_SINCE)
                created += 1
    return created
