"""May this customer start a new deployment? (SPEC §9)

Yes when the customer is not blocked (open dispute, admin hold) and either has a usable card, or
has a voucher balance that covers the new deployment's cost for the rest of the current calendar
month on top of what their other active deployments will cost. A "no" always says why.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.billing.cards import usable_cards
from app.billing.money import format_money
from app.billing.usage import active_deployments_cost_until_period_end, cost_until_period_end_cents, price_at
from app.models.base import utcnow
from app.models.customer import User
from app.models.usage import Plan


class UnknownCustomerOrPlan(LookupError):
    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class DeployDecision:
    allowed: bool
    code: str  # card | voucher | disputed | on_hold | insufficient_voucher | no_payment_method
    reason: str | None
    required_cents: int = 0
    voucher_balance_cents: int = 0


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
    if usable_cards(session, customer_id, now):
        return DeployDecision(True, "card", None, 0, voucher)
    required = active_deployments_cost_until_period_end(session, customer_id, now) + cost_until_period_end_cents(
        price.hourly_price, now
    )
    if voucher <= 0:
        return DeployDecision(False, "no_payment_method", "The customer has no usable card and no voucher balance.",
                              required, voucher)
    if voucher >= required:
        return DeployDecision(True, "voucher", None, required, voucher)
    return DeployDecision(
        False,
        "insufficient_voucher",
        f"The voucher balance ({format_money(voucher)}) does not cover the active deployments and the new one "
        f"until the end of the month ({format_money(required)}), and there is no usable card.",
        required,
        voucher,
    )
