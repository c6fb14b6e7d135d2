"""Admin cash balance adjustments: a ledger entry with a required reason, audited, and a
settlement request (money may now pay open invoices). One unit of work; commits."""

from sqlalchemy.orm import Session

from app.billing.audit import record_audit
from app.billing.ledger import MAX_BALANCE_CENTS, BalanceLimitExceeded, InsufficientFunds, post_entry
from app.billing.money import format_money
from app.billing.settlement_requests import request_settlement
from app.models import LedgerEntry, User


class AdjustmentError(Exception):
    """`str(error)` is fit for the admin."""


def adjust_cash_balance(
    session: Session, *, actor_id: int, customer_id: int, amount_cents: int, reason: str, request_key: str
) -> LedgerEntry:
    """Credit (amount > 0) or debit (amount < 0) the customer's cash balance. Idempotent on
    `request_key` (a double-submitted form adjusts once). A debit never takes the balance below zero."""
    reason = (reason or "").strip()
    if not reason:
        raise AdjustmentError("Give a reason for the adjustment.")
    if amount_cents == 0:
        raise AdjustmentError("The amount must not be zero.")
    try:
        user = session.get(User, customer_id)
        if user is None or user.is_admin:
            raise AdjustmentError("No such customer.")
        before = {"cash_balance_cents": user.cash_balance_cents}
        try:
            posted = post_entry(
                session, customer_id=customer_id, account="cash", amount_cents=amount_cents,
                kind="admin_adjustment", idempotency_key=f"admin-adjustment:{request_key}",
                reference=f"admin:{actor_id}", note=reason[:500],
            )
        except InsufficientFunds as exc:
            raise AdjustmentError("The cash balance cannot go below zero.") from exc
        except BalanceLimitExceeded as exc:
            raise AdjustmentError(
                f"The cash balance cannot exceed {format_money(MAX_BALANCE_CENTS)}."
            ) from exc
        if posted.created:
            session.refresh(user)
            record_audit(session, actor_id, "customer.adjust_cash", "user", customer_id, before,
                         {"cash_balance_cents": user.cash_balance_cents, "amount_cents": amount_cents,
                          "reason": reason, "ledger_entry_id": posted.entry.id})
            if amount_cents > 0:
                request_settlement(session, customer_id)
        session.commit()
        return posted.entry
    except Exception:
        session.rollback()
        raise
