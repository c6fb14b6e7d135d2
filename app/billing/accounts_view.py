"""Read models for pages: figures a customer sees on the dashboard."""

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Invoice, User


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
