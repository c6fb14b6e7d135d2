"""Arrange helpers shared by the usage tests (plans, lifecycle events)."""

import itertools
from datetime import UTC, datetime
from decimal import Decimal

from app.billing import pricing
from app.billing.usage import record_deployment_event
from app.models import Card

_ids = itertools.count(1)
PRICES_SINCE = datetime(2026, 1, 1, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def make_plan(session, kind="vm", size="small", public_ip=False, price="0.100000", since=PRICES_SINCE):
    return pricing.create_plan(session, None, kind=kind, size=size, public_ip=public_ip, hourly_price=Decimal(price),
                               effective_at=since)


def event(session, customer, deployment, kind, when, plan=None, name=None, event_id=None):
    return record_deployment_event(
        session,
        event_id=event_id or f"ev-{next(_ids)}",
        deployment_id=deployment,
        customer_id=customer.id,
        kind=kind,
        occurred_at=at(when) if isinstance(when, str) else when,
        plan=plan,
        name=name,
    )


def run_deployment(session, customer, deployment, plan, start, end=None, name=None):
    """created + succeeded at `start`, deleted at `end` (if given)."""
    event(session, customer, deployment, "created", start, plan=plan, name=name or deployment)
    event(session, customer, deployment, "succeeded", start)
    if end:
        event(session, customer, deployment, "deleted", end)


def add_card(session, customer, *, exp_year=2099, removed=False):
    n = next(_ids)
    card = Card(customer_id=customer.id, stripe_payment_method_id=f"pm_test_{n}", fingerprint=f"fp{n}",
                brand="visa", last4="4242", exp_month=12, exp_year=exp_year, is_default=True,
                removed_at=datetime.now(UTC) if removed else None)
    session.add(card)
    session.commit()
    return card
