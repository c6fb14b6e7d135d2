"""Foresight (SPEC §16): usage so far this month, the projected month-end invoice, the runway of the
customer's balance and their spending against the monthly limit — one read model for the
dashboard and the admin customer page.

Agreement with the invoices: the unbilled seconds come from the same functions the invoices use
(`app.billing.usage.unbilled_lines` / `unbilled_seconds`: running time from the events minus what
is already on an invoice), every deployment's amount is rounded half-even once like an invoice
line, and tax is computed on the projected subtotal and rounded once like an invoice's. The runway
is `app.billing.dunning.runway_from`, the rule behind the voucher runway warning, fed with the
same inputs; the deletion date it names is the dunning one.

Queries: one for the account summary (the customer row with its balances, one row per open
invoice for the debt and the oldest unpaid one, the grace extension, the limits, whether a usable
card exists, deployments marked for deletion, whether they ever deployed and whether a price notice
they were sent is still ahead), one for the deployments with their billed seconds and their events
(only for customers who ever deployed), and one for the price-change notices (only when one is ahead).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache

from babel.numbers import format_decimal
from flask import current_app
from sqlalchemy import Integer, bindparam, exists, func, select
from sqlalchemy.orm import Session

from app.billing.dunning import Runway, deletion_due_from, runway_from
from app.billing.money import _locale, minor_unit_factor, tax_cents, usage_amount_cents
from app.billing.price_notices import upcoming_price_notices
from app.billing.usage import (
    ACTIVE_STATES,
    period_bounds,
    period_of,
    running_seconds,
    unbilled_lines,
    unbilled_seconds,
)
from app.models import Card, Invoice, InvoiceLine, User
from app.models.base import UTCDateTime, utcnow
from app.models.dunning import DunningAccount
from app.models.foresight import ALERT_THRESHOLDS, PriceChangeNotice, SpendingLimit
from app.models.usage import Deployment, DeploymentEvent, PlanPrice

SECONDS_PER_HOUR = 3600


class UnknownCustomer(LookupError):
    pass


def format_moment(moment: datetime, now: datetime | None = None) -> str:
    """'14 December, 09:00 UTC' (the year is added when it is not the current one)."""
    moment = moment.astimezone(UTC)
    now = (now or utcnow()).astimezone(UTC)
    year = "" if moment.year == now.year else f" {moment.year}"
    return f"{moment.day} {moment:%B}{year}, {moment:%H:%M} UTC"


def format_day(moment: datetime, now: datetime | None = None) -> str:
    moment = moment.astimezone(UTC)
    now = (now or utcnow()).astimezone(UTC)
    return f"{moment.day} {moment:%B}" + ("" if moment.year == now.year else f" {moment.year}")


def amount_input_text(cents: int) -> str:
    """An amount as a person types it in this installation's locale ('21.15', or '21,15' under de_DE),
    without grouping: what `money_input.parse_money_cents` reads back to the same cents."""
    return _amount_input_text(minor_unit_factor(), _locale(), cents)


@lru_cache(maxsize=1024)
def _amount_input_text(factor: int, locale: str, cents: int) -> str:
    places = len(str(factor)) - 1
    pattern = "0." + "0" * places if places else "0"
    return format_decimal(Decimal(cents) / factor, format=pattern, locale=locale)


def hours_text(seconds: int) -> str:
    """Hours with two decimals, truncated (never more than actually ran): 90 s → '0.02'."""
    hundredths = seconds * 100 // SECONDS_PER_HOUR
    return f"{hundredths // 100}.{hundredths % 100:02d}"


def next_month_end(now: datetime) -> datetime:
    _, this_end = period_bounds(period_of(now.astimezone(UTC)))
    return period_bounds(period_of(this_end))[1]


@dataclass(frozen=True)
class DeploymentForecast:
    deployment_id: int
    name: str
    plan_name: str
    hourly_price: Decimal
    state: str
    seconds_so_far: int  # unbilled running seconds this month
    cost_so_far_cents: int
    projected_cents: int  # this month's line at month end, at the current rate
    active: bool

    @property
    def hours_so_far(self) -> str:
        return hours_text(self.seconds_so_far)


@dataclass(frozen=True)
class SpendingStatus:
    limit_cents: int
    customer_limit_cents: int | None
    admin_ceiling_cents: int | None
    spent_cents: int  # usage this calendar month so far, before tax (billed by hand or not)
    projected_cents: int  # at month end at the current rate

    @property
    def percent(self) -> int:
        return 100 if self.limit_cents <= 0 else self.spent_cents * 100 // self.limit_cents

    @property
    def reached_threshold(self) -> int | None:
        reached = [t for t in ALERT_THRESHOLDS if self.spent_cents * 100 >= t * self.limit_cents]
        return reached[-1] if reached else None

    @property
    def capped_by_admin(self) -> bool:
        return self.admin_ceiling_cents is not None and self.limit_cents == self.admin_ceiling_cents


@dataclass(frozen=True)
class Forecast:
    """Everything the usage, forecast and runway panel shows (amounts in minor units)."""

    now: datetime
    period: str
    month_end: datetime
    deployments: list[DeploymentForecast]
    so_far_seconds: int
    so_far_cents: int  # unbilled usage this month, before tax
    projected_subtotal_cents: int
    tax_rate: Decimal
    projected_tax_cents: int
    projected_total_cents: int
    cash_cents: int
    voucher_cents: int
    debt_cents: int
    has_usable_card: bool
    hourly_cost_cents: Decimal  # exact, before tax, of what runs now
    runway: Runway | None
    suggested_topup_cents: int | None  # to cover everything until the end of next month
    spending: SpendingStatus | None
    customer_limit_cents: int | None = None  # the customer's own limit (the form shows it)
    price_notices: list = field(default_factory=list)  # app.billing.price_notices.UpcomingPrice
    # the runway's input: usage not invoiced yet less time already invoiced ahead (dunning's figure)
    unbilled_cents: int = 0

    @property
    def so_far_hours(self) -> str:
        return hours_text(self.so_far_seconds)

    @property
    def voucher_only(self) -> bool:
        """No usable card: when the balance runs out, invoices stay unpaid and deletion follows."""
        return not self.has_usable_card

    @property
    def runs(self) -> bool:
        return self.hourly_cost_cents > 0

    @property
    def runway_sentence(self) -> str | None:
        """One sentence: until when the balance covers what runs now, and what happens after."""
        if self.runway is None:
            return None
        if self.runway.available_cents <= 0:
            head = "Your balance does not cover your deployments any more"
        else:
            head = f"Your balance covers your deployments until {format_moment(self.runway.runs_out_at, self.now)}"
        if self.has_usable_card:
            return head + "; after that, your card pays your invoices."
        return (head + "; without a card or a top-up, the invoices stay unpaid and your deployments would be "
                f"deleted on {format_day(self.runway.deletion_at, self.now)}.")

    @property
    def suggested_topup_text(self) -> str | None:
        """The suggested amount as the top-up form's `amount` parameter (plain decimal, e.g. 12.34)."""
        if not self.suggested_topup_cents:
            return None
        return amount_input_text(self.suggested_topup_cents)


@dataclass(frozen=True)
class _Account:
    customer: User
    debt_cents: int
    oldest_unpaid_issued_at: datetime | None
    grace_extended_until: datetime | None
    customer_limit_cents: int | None
    admin_ceiling_cents: int | None
    has_usable_card: bool
    # the rest of the account summary (the dashboard's figures and dunning panel read them too)
    open_invoices: tuple[Invoice, ...] = ()  # state open, oldest first (issued_at, id)
    marked_for_deletion: int = 0  # deployments marked and not deleted or failed yet
    has_deployments: bool = False
    has_upcoming_price_notices: bool = False

    @property
    def unpaid_invoices(self) -> list[Invoice]:
        """Open invoices with an amount due, oldest first (what `dunning.unpaid_invoices` returns)."""
        return [invoice for invoice in self.open_invoices if invoice.total_cents > invoice.paid_cents]


@lru_cache(maxsize=1)
def _account_statement():
    """The account summary (see `_load_account`), built once; bound: customer id, the current
    month as year * 100 + month (cards), now (price notices)."""
    customer_id = bindparam("customer_id", type_=Integer)
    card = exists().where(
        Card.customer_id == User.id, Card.removed_at.is_(None),
        Card.exp_year * 100 + Card.exp_month >= bindparam("year_month", type_=Integer),
    )
    marked = (
        select(func.count(Deployment.id))
        .where(Deployment.customer_id == User.id, Deployment.marked_for_deletion_at.is_not(None),
               Deployment.state.notin_(("deleted", "failed")))
        .scalar_subquery()
    )
    deployed = exists().where(Deployment.customer_id == User.id)
    notices = exists().where(PriceChangeNotice.customer_id == User.id, PlanPrice.id == PriceChangeNotice.plan_price_id,
                             PlanPrice.effective_at > bindparam("now", type_=UTCDateTime))
    return (
        select(User, Invoice, DunningAccount.grace_extended_until, SpendingLimit.customer_limit_cents,
               SpendingLimit.admin_ceiling_cents, card, marked, deployed, notices)
        .outerjoin(DunningAccount, DunningAccount.customer_id == User.id)
        .outerjoin(SpendingLimit, SpendingLimit.customer_id == User.id)
        .outerjoin(Invoice, (Invoice.customer_id == User.id) & (Invoice.state == "open"))
        .where(User.id == customer_id)
        .order_by(Invoice.issued_at, Invoice.id)
        # the figures are the database's, even for rows this session loaded before (balances and
        # invoices are moved by UPDATE statements that leave loaded objects alone)
        .execution_options(populate_existing=True)
    )


def _load_account(session: Session, customer_id: int, now: datetime) -> _Account:
    """The account summary in one query: the customer row, their open invoices (one row each, or
    one row with no invoice), the grace extension, the spending limits, whether a usable card
    exists, how many deployments are marked for deletion, whether they ever deployed and whether
    a price notice they were sent is still ahead."""
    rows = session.execute(
        _account_statement(), {"customer_id": customer_id, "year_month": now.year * 100 + now.month, "now": now}
    ).all()
    if not rows:
        raise UnknownCustomer(customer_id)
    customer, _, grace, own_limit, ceiling, has_card, marked_count, has_deployments, has_notices = rows[0]
    open_invoices = tuple(invoice for _, invoice, *_rest in rows if invoice is not None)
    unpaid = [invoice for invoice in open_invoices if invoice.total_cents > invoice.paid_cents]
    oldest = min((invoice.issued_at or invoice.created_at for invoice in unpaid), default=None)
    return _Account(
        customer, sum(invoice.amount_due_cents for invoice in unpaid), oldest, grace, own_limit, ceiling, bool(has_card),
        open_invoices=open_invoices, marked_for_deletion=int(marked_count or 0), has_deployments=bool(has_deployments),
        has_upcoming_price_notices=bool(has_notices),
    )


@lru_cache(maxsize=1)
def _deployments_statement():
    """The customer's deployments with their billed seconds and one row per lifecycle event, built
    once; bound: customer id."""
    customer_id = bindparam("customer_id", type_=Integer)
    billed = (
        select(InvoiceLine.deployment_id, func.sum(InvoiceLine.seconds).label("seconds"))
        .join(Deployment, Deployment.id == InvoiceLine.deployment_id)
        .where(Deployment.customer_id == customer_id)
        .group_by(InvoiceLine.deployment_id)
        .subquery()
    )
    return (
        select(Deployment, billed.c.seconds, DeploymentEvent.kind, DeploymentEvent.occurred_at)
        .outerjoin(billed, billed.c.deployment_id == Deployment.id)
        .outerjoin(DeploymentEvent, DeploymentEvent.deployment_id == Deployment.id)
        .where(Deployment.customer_id == customer_id)
        .order_by(Deployment.id, DeploymentEvent.occurred_at, DeploymentEvent.id)
    )


def _load_deployments(session: Session, customer_id: int):
    """The customer's deployments with their billed seconds and their lifecycle events, in one query
    (one row per event). Returns (deployments, billed seconds by id, events by id)."""
    rows = session.execute(_deployments_statement(), {"customer_id": customer_id}).all()
    deployments: list[Deployment] = []
    billed_by_id: dict[int, int] = {}
    events: dict[int, list[tuple[str, datetime]]] = {}
    for deployment, seconds, kind, occurred_at in rows:
        if not deployments or deployments[-1].id != deployment.id:
            deployments.append(deployment)
            if seconds:
                billed_by_id[deployment.id] = int(seconds)
        if kind is not None:
            events.setdefault(deployment.id, []).append((kind, occurred_at))
    return deployments, billed_by_id, events


def _tax_rate(country: str | None) -> Decimal:
    from app.billing.monthly import tax_rate_for

    return Decimal(tax_rate_for(country))


def _invoice_total(subtotal_cents: int, rate: Decimal) -> int:
    return subtotal_cents + tax_cents(subtotal_cents, rate)


def _clamp_topup(cents: int) -> int:
    low, high = int(current_app.config["TOPUP_MIN_CENTS"]), int(current_app.config["TOPUP_MAX_CENTS"])
    return min(max(cents, low), high)


def customer_forecast(session: Session, customer_id: int, now: datetime | None = None) -> Forecast:
    """The customer's usage so far this month, the projected month-end invoice, the runway and the
    spending against their limit, as of `now`."""
    return forecast_with_account(session, customer_id, now)[0]


def forecast_with_account(session: Session, customer_id: int, now: datetime | None = None) -> tuple[Forecast, _Account]:
    """`customer_forecast` and the account summary it was computed from (for read models that show
    both, e.g. the dashboard): two queries, a third only when a price notice is ahead."""
    now = (now or utcnow()).astimezone(UTC)
    account = _load_account(session, customer_id, now)
    deployments, billed, events = _load_deployments(session, customer_id) if account.has_deployments else ([], {}, {})
    forecast = build_forecast(account, deployments, billed, events, now)
    # only customers who ever deployed are told about price changes
    if deployments and account.has_upcoming_price_notices:
        forecast = replace(forecast, price_notices=upcoming_price_notices(session, customer_id, now))
    return forecast, account


def build_forecast(account: _Account, deployments: Sequence[Deployment], billed: dict, events: dict,
                   now: datetime) -> Forecast:
    period = period_of(now)
    month_start, month_end = period_bounds(period)
    next_end = next_month_end(now)
    rest_of_month = int((month_end - now).total_seconds())
    next_month = int((next_end - month_end).total_seconds())
    rate = _tax_rate(account.customer.country)

    rows: list[DeploymentForecast] = []
    earlier_subtotal = 0  # unbilled usage of earlier months (the previous month's invoice, not issued yet)
    next_subtotal = 0
    spent = projected_spend = 0
    hourly_price_total = Decimal(0)
    invoiced_ahead = 0
    for deployment in deployments:
        history = events.get(deployment.id, [])
        charged = billed.get(deployment.id, 0)
        before_month = unbilled_seconds(history, charged, month_start)
        this_month = unbilled_seconds(history, charged, now) - before_month
        # time after now already invoiced (old invoices billed the month to its end): not again
        ahead = max(0, charged - running_seconds(history, None, now))
        active = deployment.state in ACTIVE_STATES
        rest = max(0, rest_of_month - ahead) if active else 0
        price = Decimal(deployment.hourly_price)
        invoiced_ahead += usage_amount_cents(price, ahead)
        used = running_seconds(history, month_start, now)
        spent += usage_amount_cents(price, used)
        projected_spend += usage_amount_cents(price, used + (rest_of_month if active else 0))
        earlier_subtotal += usage_amount_cents(price, before_month)
        if active:
            hourly_price_total += price
            next_subtotal += usage_amount_cents(price, next_month)
        if active or this_month > 0:
            rows.append(DeploymentForecast(
                deployment.id, deployment.name, deployment.plan_name, price, deployment.state, this_month,
                usage_amount_cents(price, this_month), usage_amount_cents(price, this_month + rest), active,
            ))
    so_far_cents = sum(row.cost_so_far_cents for row in rows)
    projected_subtotal = sum(row.projected_cents for row in rows)
    projected_tax = tax_cents(projected_subtotal, rate)

    customer = account.customer
    hourly_cost = hourly_price_total * minor_unit_factor()
    deletion_due = deletion_due_from(account.oldest_unpaid_issued_at, account.grace_extended_until)
    # the same figure as dunning's runway: usage not invoiced yet, less time already invoiced ahead
    unbilled_cents = sum(line.amount_cents for line in unbilled_lines(deployments, events, billed, now)) - invoiced_ahead
    runway = runway_from(
        hourly_cost_cents=hourly_cost, tax_rate=rate,
        balance_cents=customer.cash_balance_cents + customer.voucher_balance_cents,
        unbilled_cents=unbilled_cents, debt_cents=account.debt_cents, deletion_due=deletion_due, now=now,
    )

    suggested = None
    if runway is not None:
        # What the invoices until the end of next month will ask for, rounded as they will be:
        # the open debt, the earlier month's usage, this month's and next month's invoices.
        needed = (account.debt_cents + _invoice_total(earlier_subtotal, rate)
                  + _invoice_total(projected_subtotal, rate) + _invoice_total(next_subtotal, rate))
        shortfall = needed - customer.cash_balance_cents - customer.voucher_balance_cents
        suggested = _clamp_topup(shortfall) if shortfall > 0 else None

    limits = [v for v in (account.customer_limit_cents, account.admin_ceiling_cents) if v is not None]
    spending = None
    if limits:
        spending = SpendingStatus(min(limits), account.customer_limit_cents, account.admin_ceiling_cents,
                                  spent, projected_spend)

    return Forecast(
        now=now, period=period, month_end=month_end, deployments=rows,
        so_far_seconds=sum(row.seconds_so_far for row in rows), so_far_cents=so_far_cents,
        projected_subtotal_cents=projected_subtotal, tax_rate=rate, projected_tax_cents=projected_tax,
        projected_total_cents=projected_subtotal + projected_tax,
        cash_cents=customer.cash_balance_cents, voucher_cents=customer.voucher_balance_cents,
        debt_cents=account.debt_cents, has_usable_card=account.has_usable_card, hourly_cost_cents=hourly_cost,
        runway=runway, suggested_topup_cents=suggested, spending=spending,
        customer_limit_cents=account.customer_limit_cents, unbilled_cents=unbilled_cents,
    )
