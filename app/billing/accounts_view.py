"""Read models for pages: figures a customer sees on the dashboard, and the whole dashboard.

The dashboard (`customer_dashboard`) reads everything it shows from the foresight read model's
account summary (one query: balances, open invoices, grace, limits, usable card, deployments marked
for deletion) and its deployments query; the figures, the dunning panel and the open-invoices panel
are computed from those rows by the same rules as `dashboard_figures` and `dunning.dunning_summary`.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.billing.dunning import DunningSummary, deletion_due_from, runway_from, runway_tax_rate, summary_from
from app.billing.foresight import Forecast, forecast_with_account
from app.models import Invoice, User
from app.models.base import utcnow

OPEN_INVOICES_SHOWN = 5


@dataclass(frozen=True)
class DashboardFigures:
    cash_balance_cents: int
    voucher_balance_cents: int
    debt_cents: int
    open_invoices: int


def dashboard_figures(session: Session, customer_id: int) -> DashboardFigures:
    user = session.get(User, customer_id)
    debt, count = session.execute(
        select(func.coalesce(func.sum(Invoice.total_cents - Invoice.paid_cents), 0), func.count(Invoice.id)).where(
            Invoice.customer_id == customer_id, Invoice.state == "open"
        )
    ).one()
    return DashboardFigures(user.cash_balance_cents, user.voucher_balance_cents, int(debt), int(count))


@dataclass(frozen=True)
class CustomerDashboard:
    figures: DashboardFigures
    dunning: DunningSummary
    forecast: Forecast
    open_invoices: list[Invoice]  # the oldest few open invoices (the open-invoices panel)


def customer_dashboard(session: Session, customer_id: int, now: datetime | None = None) -> CustomerDashboard:
    """Everything the customer dashboard shows, in two queries (three when a price notice is ahead)."""
    now = (now or utcnow()).astimezone(UTC)
    forecast, account = forecast_with_account(session, customer_id, now)
    customer = account.customer
    open_invoices = list(account.open_invoices)
    figures = DashboardFigures(customer.cash_balance_cents, customer.voucher_balance_cents,
                               sum(invoice.total_cents - invoice.paid_cents for invoice in open_invoices),
                               len(open_invoices))
    # dunning.voucher_runway from the same inputs: only without a usable card, only when something runs
    runway = None
    if not customer.is_admin and not account.has_usable_card and forecast.hourly_cost_cents > 0:
        runway = runway_from(
            hourly_cost_cents=forecast.hourly_cost_cents, tax_rate=runway_tax_rate(customer.country, customer.vat_id),
            balance_cents=customer.voucher_balance_cents + customer.cash_balance_cents,
            unbilled_cents=forecast.unbilled_cents, debt_cents=account.debt_cents,
            deletion_due=deletion_due_from(account.oldest_unpaid_issued_at, account.grace_extended_until), now=now,
        )
    dunning = summary_from(unpaid=account.unpaid_invoices, grace_extended_until=account.grace_extended_until,
                           marked_for_deletion=account.marked_for_deletion, runway=runway, now=now)
    return CustomerDashboard(figures, dunning, forecast, open_invoices[:OPEN_INVOICES_SHOWN])
