"""May this customer start a new deployment? (SPEC §9, §16)

Yes when the customer is not blocked (open dispute, admin hold), the new deployment's cost until the
end of the month keeps the month within their spending limit (if they have one), and either they
have a usable card, or a voucher balance that covers the new deployment's cost for the rest of the
current calendar month on top of what their other active deployments will cost. A "no" always says
why, naming every funding source the customer has and why it does or does not qualify (a cash
balance pays invoices but never qualifies on its own).
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.billing.cards import active_cards, usable_cards
from app.billing.money import format_money
from app.billing.usage import active_deployments_cost_until_period_end, cost_until_period_end_cents, price_at
from app.models.base import utcnow
from app.models.customer import User
from app.models.foresight import SpendingLimit
from app.models.usage import Plan


class UnknownCustomerOrPlan(LookupError):
    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class DeployDecision:
    allowed: bool
    # card | voucher | disputed | on_hold | spending_limit | insufficient_voucher | no_payment_method
    code: str
    reason: str | None
    required_cents: int = 0
    voucher_balance_cents: int = 0


def _spending_limit_reason(session: Session, customer_id: int, new_cost_cents: int, now: datetime) -> str | None:
    """Why the new deployment would take the month past the customer's limit, or None."""
    limit = session.get(SpendingLimit, customer_id)
    if limit is None or limit.effective_cents is None:
        return None
    from app.billing.foresight import customer_forecast

    status = customer_forecast(session, customer_id, now).spending
    if status is None or status.projected_cents + new_cost_cents <= status.limit_cents:
        return None
    who = "capped by the administrator" if status.capped_by_admin else "set by the customer"
    return (
        f"The new deployment would cost {format_money(new_cost_cents)} until the end of the month; with "
        f"{format_money(status.spent_cents)} used so far this month and "
        f"{format_money(status.projected_cents - status.spent_cents)} that the running deployments will cost "
        f"until then, the month would reach {format_money(status.projected_cents + new_cost_cents)} (before tax), "
        f"over the monthly spending limit of {format_money(status.limit_cents)} ({who})."
    )


def _funding_reason(session: Session, customer: User, required: int, now: datetime) -> str:
    """Name every funding source the customer has and why none qualifies."""
    parts = []
    cards = active_cards(session, customer.id)
    expired = [card for card in cards if card.is_expired(now)]
    if expired:
        listed = ", ".join(f"{card.brand.title()} ending {card.last4} ({card.exp_month:02d}/{card.exp_year})"
                           for card in expired)
        parts.append(f"No usable card: {listed} {'has' if len(expired) == 1 else 'have'} expired.")
    else:
        parts.append("No usable card.")
    voucher, cash = customer.voucher_balance_cents, customer.cash_balance_cents
    if voucher > 0:
        parts.append(
            f"The voucher balance ({format_money(voucher)}) does not cover the active deployments and the new one "
            f"until the end of the month ({format_money(required)})."
        )
    else:
        parts.append("No voucher balance.")
    if cash > 0:
        parts.append(f"The cash balance ({format_money(cash)}) pays invoices but does not qualify for new "
                     "deployments.")
    parts.append(f"A card, or a voucher balance of at least {format_money(required)}, is required.")
    return " ".join(parts)


def can_deploy(session: Session, customer_id: int, plan_name: str, now: datetime | None = None) -> DeployDecision:
    now = now or utcnow()
    customer = session.get(User, customer_id)
    if customer is None or customer.is_admin:
        raise UnknownCustomerOrPlan("No such customer.", "customer_id")
    plan = session.scalar(select(Plan).where(Plan.name == plan_name))
    if plan is None:
        raise UnknownCustomerOrPlan(f"Unknown plan {plan_name!r}.", "plan")
    price = price_at(session, plan.id, now)
    if price is None:
        raise UnknownCustomerOrPlan(f"Plan {plan_name!r} has no price yet.", "plan")
    voucher = customer.voucher_balance_cents
    if customer.disputed:
        return DeployDecision(False, "disputed", "The customer has an open card dispute.", 0, voucher)
    if customer.on_hold:
        reason = "The customer's account is on hold" + (f": {customer.hold_reason}" if customer.hold_reason else ".")
        return DeployDecision(False, "on_hold", reason, 0, voucher)
    new_cost = cost_until_period_end_cents(price.hourly_price, now)
    over_limit = _spending_limit_reason(session, customer_id, new_cost, now)
    if over_limit:
        return DeployDecision(False, "spending_limit", over_limit, new_cost, voucher)
    if usable_cards(session, customer_id, now):
        return DeployDecision(True, "card", None, 0, voucher)
    required = active_deployments_cost_until_period_end(session, customer_id, now) + new_cost
    if voucher > 0 and voucher >= required:
        return DeployDecision(True, "voucher", None, required, voucher)
    code = "insufficient_voucher" if voucher > 0 else "no_payment_method"
    return DeployDecision(False, code, _funding_reason(session, customer, required, now), required, voucher)
