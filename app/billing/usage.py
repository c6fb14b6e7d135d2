"""Deployments, lifecycle events and billable time (SPEC §6).

Running time is derived from the append-only events only: a deployment runs from a `succeeded` or
`resumed` event until the next event (suspended / deleted). Events of one deployment are accepted
in time order only (an older event is rejected with `EventOutOfOrder`), so the event stream is
always a valid state machine and any bill can be recomputed.

Unbilled seconds of a deployment up to time T = its running seconds before T minus the seconds
already on invoices (the seconds of its invoice lines): usage is never billed twice and a late event for a closed
period lands on the next invoice.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.billing import notifications
from app.billing.money import minor_unit_factor, usage_amount_cents
from app.billing.periods import period_bounds  # noqa: F401  (re-exported)
from app.models import InvoiceLine
from app.models.base import utcnow
from app.models.customer import User
from app.models.usage import Deployment, DeploymentEvent, Plan, PlanPrice

# Deployments that cost (or are about to cost) money: created but not yet answered, and running.
ACTIVE_STATES = ("in_progress", "running")
RUNNING_EVENTS = ("succeeded", "resumed")
# event kind -> (states it may follow, state it leads to)
TRANSITIONS = {
    "succeeded": (("in_progress",), "running"),
    "failed": (("in_progress",), "failed"),
    "suspended": (("running",), "suspended"),
    "resumed": (("suspended",), "running"),
    "deleted": (("in_progress", "running", "suspended", "failed"), "deleted"),
}


# ------------------------------------------------------------------ periods ---
# period_bounds (re-exported here for its many callers) lives in the one period door, app.billing.periods.
def period_of(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def previous_period(now: datetime | None = None) -> str:
    now = now or utcnow()
    first = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return period_of(first - timedelta(days=1))


def month_end(now: datetime) -> datetime:
    return period_bounds(period_of(now.astimezone(UTC)))[1]


# -------------------------------------------------------------- running time ---
def running_seconds(events, start: datetime | None, end: datetime) -> int:
    """Seconds inside [start, end) during which the deployment was running.

    `events` are (kind, occurred_at) pairs in time order. `start=None` means since the beginning.
    """
    total = 0
    running_since = None
    for kind, occurred_at in events:
        if occurred_at >= end:
            break
        if running_since is not None:
            total += _overlap(running_since, occurred_at, start, end)
            running_since = None
        if kind in RUNNING_EVENTS:
            running_since = occurred_at
    if running_since is not None:
        total += _overlap(running_since, end, start, end)
    return total


def _overlap(a: datetime, b: datetime, start: datetime | None, end: datetime) -> int:
    lo = a if start is None else max(a, start)
    hi = min(b, end)
    return max(0, int((hi - lo).total_seconds()))


def events_by_deployment(session: Session, deployment_ids) -> dict[int, list[tuple[str, datetime]]]:
    result: dict[int, list[tuple[str, datetime]]] = defaultdict(list)
    ids = list(deployment_ids)
    for chunk_start in range(0, len(ids), 1000):
        rows = session.execute(
            select(DeploymentEvent.deployment_id, DeploymentEvent.kind, DeploymentEvent.occurred_at)
            .where(DeploymentEvent.deployment_id.in_(ids[chunk_start : chunk_start + 1000]))
            .order_by(DeploymentEvent.deployment_id, DeploymentEvent.occurred_at, DeploymentEvent.id)
        )
        for deployment_id, kind, occurred_at in rows:
            result[deployment_id].append((kind, occurred_at))
    return result


def billed_seconds(session: Session, deployment_ids) -> dict[int, int]:
    ids = list(deployment_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(InvoiceLine.deployment_id, func.sum(InvoiceLine.seconds))
        .where(InvoiceLine.deployment_id.in_(ids))
        .group_by(InvoiceLine.deployment_id)
    )
    return {deployment_id: int(seconds) for deployment_id, seconds in rows}


@dataclass(frozen=True)
class UsageLine:
    deployment: Deployment
    seconds: int
    amount_cents: int


def unbilled_seconds(events, billed: int, until: datetime) -> int:
    """Running seconds before `until` not yet on any invoice (`billed` = seconds already charged)."""
    return max(0, running_seconds(events, None, until) - billed)


def unbilled_lines(deployments, events: dict, billed: dict, until: datetime) -> list[UsageLine]:
    """The lines `unbilled_usage` returns, from already loaded deployments, events and billed seconds
    (so a read model that loads them its own way prices them exactly like the invoice will)."""
    lines = []
    for deployment in deployments:
        seconds = unbilled_seconds(events.get(deployment.id, []), billed.get(deployment.id, 0), until)
        if seconds > 0:
            lines.append(UsageLine(deployment, seconds, usage_amount_cents(deployment.hourly_price, seconds)))
    return lines


def unbilled_usage(session: Session, customer_id: int, until: datetime) -> list[UsageLine]:
    """Per deployment of the customer: running seconds before `until` not yet on any invoice."""
    deployments = list(
        session.scalars(select(Deployment).where(Deployment.customer_id == customer_id).order_by(Deployment.id))
    )
    ids = [d.id for d in deployments]
    return unbilled_lines(deployments, events_by_deployment(session, ids), billed_seconds(session, ids), until)


@dataclass(frozen=True)
class DeploymentCost:
    deployment: Deployment
    seconds: int
    amount_cents: int


def month_to_date(session: Session, customer_id: int, now: datetime | None = None) -> list[DeploymentCost]:
    """Each deployment of the customer with its running seconds and cost this calendar month so far."""
    now = now or utcnow()
    start, _ = period_bounds(period_of(now.astimezone(UTC)))
    deployments = list(
        session.scalars(
            select(Deployment).where(Deployment.customer_id == customer_id).order_by(Deployment.id.desc())
        )
    )
    events = events_by_deployment(session, [d.id for d in deployments])
    costs = []
    for deployment in deployments:
        seconds = running_seconds(events.get(deployment.id, []), start, now)
        costs.append(DeploymentCost(deployment, seconds, usage_amount_cents(deployment.hourly_price, seconds)))
    return costs


# ------------------------------------------------- interfaces for other issues ---
def _active_deployments(session: Session, customer_id: int) -> list[Deployment]:
    return list(
        session.scalars(
            select(Deployment).where(Deployment.customer_id == customer_id, Deployment.state.in_(ACTIVE_STATES))
        )
    )


def cost_until_period_end_cents(hourly_price: Decimal, now: datetime, already_invoiced_seconds: int = 0) -> int:
    seconds = int((month_end(now) - now).total_seconds()) - already_invoiced_seconds
    return usage_amount_cents(hourly_price, max(0, seconds))


def invoiced_ahead_seconds(session: Session, deployments, now: datetime) -> dict[int, int]:
    """Per deployment: seconds already on invoices beyond its running time up to `now`, i.e. time
    after `now` that is already invoiced. Invoices bill only time that has passed, so this is 0 except
    for invoices issued before that rule (they billed the current month to its end)."""
    billed = billed_seconds(session, [d.id for d in deployments])
    if not billed:
        return {}
    events = events_by_deployment(session, list(billed))
    ahead = {}
    for deployment_id, seconds in billed.items():
        surplus = seconds - running_seconds(events.get(deployment_id, []), None, now)
        if surplus > 0:
            ahead[deployment_id] = surplus
    return ahead


def invoiced_ahead_cents(session: Session, customer_id: int, now: datetime | None = None) -> int:
    """What the customer's deployments' time after `now` that is already invoiced cost (see above)."""
    now = now or utcnow()
    deployments = list(session.scalars(select(Deployment).where(Deployment.customer_id == customer_id)))
    ahead = invoiced_ahead_seconds(session, deployments, now)
    return sum(usage_amount_cents(d.hourly_price, ahead[d.id]) for d in deployments if d.id in ahead)


def active_deployments_cost_until_period_end(session: Session, customer_id: int, now: datetime | None = None) -> int:
    """Cents the customer's active deployments (in progress or running; suspended ones cost nothing)
    will cost from `now` to the end of the current calendar month UTC, rounded per deployment; time
    already invoiced is not counted again."""
    now = now or utcnow()
    deployments = _active_deployments(session, customer_id)
    ahead = invoiced_ahead_seconds(session, deployments, now)
    return sum(cost_until_period_end_cents(d.hourly_price, now, ahead.get(d.id, 0)) for d in deployments)


def hourly_cost_cents_of_active_deployments(session: Session, customer_id: int) -> Decimal:
    """Exact per-hour burn of the active deployments, in minor units (not rounded)."""
    total = sum((Decimal(d.hourly_price) for d in _active_deployments(session, customer_id)), Decimal(0))
    return total * minor_unit_factor()


def mark_customer_deployments_for_deletion(session: Session, customer_id: int, reason: str) -> list[int]:
    """Mark every not-yet-deleted deployment of the customer for deletion (idempotent: an existing
    mark keeps its time and reason). Returns the ids of all marked deployments. Does NOT commit."""
    now = utcnow()
    deployments = session.scalars(
        select(Deployment)
        .where(Deployment.customer_id == customer_id, Deployment.state.notin_(("deleted", "failed")))
        .order_by(Deployment.id)
        .with_for_update()
    ).all()
    for deployment in deployments:
        if deployment.marked_for_deletion_at is None:
            deployment.marked_for_deletion_at = now
            deployment.deletion_reason = reason[:500]
    session.flush()
    return [d.id for d in deployments]


# ------------------------------------------------------------ lifecycle events ---
class UsageError(Exception):
    """Base of lifecycle errors; `field` names the offending input, `status` the HTTP status."""

    status = 422

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class UnknownCustomer(UsageError):
    status = 404


class UnknownPlan(UsageError):
    pass


class EventConflict(UsageError):
    status = 409


class EventOutOfOrder(UsageError):
    status = 409


class InvalidTransition(UsageError):
    status = 409


@dataclass(frozen=True)
class RecordedEvent:
    deployment: Deployment
    event: DeploymentEvent
    created: bool  # False: this event id was already recorded (idempotent replay)


def price_at(session: Session, plan_id: int, moment: datetime) -> PlanPrice | None:
    return session.scalar(
        select(PlanPrice)
        .where(PlanPrice.plan_id == plan_id, PlanPrice.effective_at <= moment)
        .order_by(PlanPrice.effective_at.desc(), PlanPrice.id.desc())
        .limit(1)
    )


def _event_payload(plan: str | None, name: str | None) -> dict:
    return {"plan": plan, "name": name}


def _same_event(event: DeploymentEvent, deployment: Deployment, external_id: str, customer_id: int, kind: str,
                occurred_at: datetime, plan: str | None, name: str | None) -> bool:
    """The whole reported content, not only its key fields: the same id with another plan or name is
    another event (rows recorded before payloads were kept for every kind have none to compare)."""
    return (
        deployment.external_id == external_id
        and deployment.customer_id == customer_id
        and event.kind == kind
        and event.occurred_at == occurred_at
        and (event.payload is None or event.payload == _event_payload(plan, name))
    )


def record_deployment_event(
    session: Session,
    *,
    event_id: str,
    deployment_id: str,
    customer_id: int,
    kind: str,
    occurred_at: datetime,
    plan: str | None = None,
    name: str | None = None,
) -> RecordedEvent:
    """Record one lifecycle event reported by the platform, and commit.

    Idempotent by `event_id`: a replay returns the first recording (created=False); the same id
    with different content (any field) is an `EventConflict`. The customer must be a customer
    (unknown ids and admins are `UnknownCustomer`). Events of one deployment must arrive in time
    order and follow the lifecycle (created → succeeded|failed, running ⇄ suspended, → deleted);
    otherwise `EventOutOfOrder` / `InvalidTransition` and nothing is written.
    """
    occurred_at = occurred_at.astimezone(UTC).replace(microsecond=0)
    customer = session.get(User, customer_id)
    if customer is None or customer.is_admin:
        session.rollback()
        raise UnknownCustomer("No such customer.", "customer_id")
    replay = _replay(session, event_id, deployment_id, customer_id, kind, occurred_at, plan, name)
    if replay is not None:
        return replay
    try:
        recorded = _record_new(session, event_id, deployment_id, customer_id, kind, occurred_at, plan, name)
        session.commit()
        return recorded
    except IntegrityError:
        session.rollback()
        replay = _replay(session, event_id, deployment_id, customer_id, kind, occurred_at, plan, name)
        if replay is not None:
            return replay
        raise EventConflict("This deployment was created concurrently by another event.", "deployment_id") from None
    except UsageError:
        session.rollback()
        raise


def _replay(session, event_id, external_id, customer_id, kind, occurred_at, plan, name) -> RecordedEvent | None:
    event = session.scalar(select(DeploymentEvent).where(DeploymentEvent.event_id == event_id))
    if event is None:
        return None
    deployment = session.get(Deployment, event.deployment_id)
    if not _same_event(event, deployment, external_id, customer_id, kind, occurred_at, plan, name):
        raise EventConflict("This event id was already used for a different event.", "event_id")
    return RecordedEvent(deployment, event, False)


def _record_new(session, event_id, external_id, customer_id, kind, occurred_at, plan_name, name) -> RecordedEvent:
    if kind == "created":
        if not plan_name:
            raise UnknownPlan("A created event needs a plan.", "plan")
        plan = session.scalar(select(Plan).where(Plan.name == plan_name))
        if plan is None:
            raise UnknownPlan(f"Unknown plan {plan_name!r}.", "plan")
        price = price_at(session, plan.id, occurred_at)
        if price is None:
            raise UnknownPlan(f"Plan {plan_name!r} had no price at {occurred_at.isoformat()}.", "occurred_at")
        if session.scalar(select(Deployment.id).where(Deployment.external_id == external_id)) is not None:
            raise InvalidTransition("This deployment was already created.", "type")
        deployment = Deployment(
            external_id=external_id,
            customer_id=customer_id,
            name=(name or external_id)[:200],
            plan_id=plan.id,
            plan_name=plan.name,
            hourly_price=price.hourly_price,
            state="in_progress",
            created_at=occurred_at,
            last_event_at=occurred_at,
        )
        session.add(deployment)
        session.flush()
    else:
        if kind not in TRANSITIONS:
            raise UsageError(f"Unknown event type {kind!r}.", "type")
        deployment = session.scalar(
            select(Deployment).where(Deployment.external_id == external_id).with_for_update()
        )
        if deployment is None:
            raise EventOutOfOrder("This deployment has not been created yet; send its created event first.",
                                  "deployment_id")
        if deployment.customer_id != customer_id:
            raise EventConflict("This deployment belongs to another customer.", "customer_id")
        if occurred_at < deployment.last_event_at:
            raise EventOutOfOrder(
                f"Event is older than the deployment's last event ({deployment.last_event_at.isoformat()}).",
                "occurred_at",
            )
        allowed_from, new_state = TRANSITIONS[kind]
        if deployment.state not in allowed_from:
            raise InvalidTransition(f"A {deployment.state} deployment cannot be {kind}.", "type")
        deployment.state = new_state
        deployment.last_event_at = occurred_at
        if kind == "deleted" and deployment.marked_for_deletion_at is not None:
            notifications.announce_deployment_deleted(session, deployment, occurred_at)
    event = DeploymentEvent(
        event_id=event_id,
        deployment_id=deployment.id,
        kind=kind,
        occurred_at=occurred_at,
        payload=_event_payload(plan_name, name),
    )
    session.add(event)
    session.flush()
    return RecordedEvent(deployment, event, True)
