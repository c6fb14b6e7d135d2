"""Admin refunds of unspent cash balance (never voucher balance) back to the cards that paid it.

Two steps, like a card charge: (1) in one transaction, under the customer's row lock, the refund
is split over the customer's top-ups (newest first), each part gets a `cash_refunds` row
(pending), a negative cash ledger entry and an audit row — committed; (2) each part is refunded
at Stripe with the part's idempotency key. A timeout leaves the part pending (retried later with
the same key, never refunded twice); a definite refusal marks it failed and credits the part back.
The whole admin request is idempotent on `request_key` (a double submit does nothing new).

Credit notes refunded to the card reuse the same rows and the same sending (`credit_note_id` set,
no top-up): the issuing transaction writes them pending and calls `schedule_refund_send`; after
its commit the registered sender (jobs.refunds enqueues a job) asks Stripe. Whatever a lost job or
a killed worker leaves pending, the periodic Stripe reconciliation re-sends with the same key.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from app.billing.audit import record_audit
from app.billing.ledger import post_entry
from app.billing.money import format_money
from app.billing.settlement_requests import request_settlement
from app.models import User
from app.models.stripe_events import CashRefund, Topup
from app.payments import gateway

log = logging.getLogger(__name__)
_PENDING_SENDS_KEY = "paydesk_pending_refund_sends"
_refund_sender: Callable[[str], object] | None = None


def register_refund_sender(sender: Callable[[str], object]) -> None:
    """`jobs` registers how pending refunds of a request are sent after a commit (an RQ job)."""
    global _refund_sender
    _refund_sender = sender


def schedule_refund_send(session: Session, request_key: str) -> None:
    """Send the pending refunds of `request_key` once the caller's transaction commits."""
    session.info.setdefault(_PENDING_SENDS_KEY, set()).add(request_key)


@event.listens_for(Session, "after_commit")
def _send_after_commit(session: Session) -> None:
    keys = session.info.pop(_PENDING_SENDS_KEY, None)
    if not keys:
        return
    if _refund_sender is None:
        log.warning("no refund sender registered; the Stripe reconciliation will send %s", sorted(keys))
        return
    for key in sorted(keys):
        _refund_sender(key)


@event.listens_for(Session, "after_rollback")
def _forget_sends_on_rollback(session: Session) -> None:
    session.info.pop(_PENDING_SENDS_KEY, None)


class RefundError(Exception):
    """`str(error)` is fit to show to the admin."""


@dataclass(frozen=True)
class RefundOutcome:
    parts: list[CashRefund]

    @property
    def refunded_cents(self) -> int:
        return sum(p.amount_cents for p in self.parts if p.status == "succeeded")

    @property
    def pending_cents(self) -> int:
        return sum(p.amount_cents for p in self.parts if p.status == "pending")

    @property
    def failed_cents(self) -> int:
        return sum(p.amount_cents for p in self.parts if p.status == "failed")


def refundable_cents(session: Session, customer_id: int) -> int:
    """Unspent cash that can go back to cards: the cash balance, capped by what top-ups can refund."""
    user = session.get(User, customer_id)
    from_topups = sum(t.refundable_cents for t in _refundable_topups(session, customer_id))
    return min(user.cash_balance_cents, from_topups)


def _refundable_topups(session: Session, customer_id: int) -> list[Topup]:
    return [
        t
        for t in session.scalars(
            select(Topup)
            .where(Topup.customer_id == customer_id, Topup.disputed_at.is_(None))
            .order_by(Topup.created_at.desc(), Topup.id.desc())
        )
        if t.refundable_cents > 0
    ]


def refund_cash_balance(
    session: Session, *, actor_id: int, customer_id: int, amount_cents: int, reason: str, request_key: str
) -> RefundOutcome:
    """Refund `amount_cents` of the customer's unspent cash to the cards that topped it up."""
    reason = (reason or "").strip()
    if not reason:
        raise RefundError("Give a reason for the refund.")
    if amount_cents <= 0:
        raise RefundError("Enter an amount greater than zero.")
    user = session.scalar(select(User).where(User.id == customer_id).with_for_update())
    if user is None or user.is_admin:
        session.rollback()
        raise RefundError("No such customer.")
    already = list(session.scalars(select(CashRefund).where(CashRefund.request_key == request_key)))
    if not already:
        available = refundable_cents(session, customer_id)
        if amount_cents > available:
            session.rollback()
            raise RefundError(f"At most {format_money(available)} of this customer's cash balance can be refunded.")
        before = {"cash_balance_cents": user.cash_balance_cents}
        remaining = amount_cents
        for topup in _refundable_topups(session, customer_id):
            if remaining == 0:
                break
            part = min(remaining, topup.refundable_cents)
            remaining -= part
            topup.refunded_cents += part
            row = CashRefund(
                customer_id=customer_id,
                topup_id=topup.id,
                payment_intent_id=topup.payment_intent_id,
                amount_cents=part,
                request_key=request_key,
                idempotency_key=f"cash-refund:{request_key}:{topup.id}",
                reason=reason,
                actor_id=actor_id,
                status="pending",
            )
            session.add(row)
            post_entry(
                session,
                customer_id=customer_id,
                account="cash",
                amount_cents=-part,
                kind="refund",
                idempotency_key=row.idempotency_key,
                reference=topup.payment_intent_id,
                note=reason[:500],
            )
        session.flush()
        record_audit(
            session,
            actor_id,
            "refund_cash_balance",
            "customer",
            customer_id,
            before=before,
            after={"cash_balance_cents": user.cash_balance_cents, "refund_cents": amount_cents, "reason": reason},
        )
    session.commit()
    return RefundOutcome(send_pending_refunds(session, request_key=request_key))


def send_pending_refunds(session: Session, *, request_key: str | None = None) -> list[CashRefund]:
    """Ask Stripe for every pending part (same idempotency key each time). Commits per part."""
    query = select(CashRefund).where(CashRefund.status == "pending")
    if request_key is not None:
        query = select(CashRefund).where(CashRefund.request_key == request_key)
    parts = list(session.scalars(query.order_by(CashRefund.id)))
    for part in parts:
        if part.status != "pending":
            continue
        try:
            refund_id = gateway.refund_payment(
                payment_intent_id=part.payment_intent_id,
                amount_cents=part.amount_cents,
                idempotency_key=part.idempotency_key,
                metadata={"paydesk_cash_refund_id": str(part.id)},
            )
        except gateway.PaymentOutcomeUnknown as exc:
            part.error_message = str(exc)
            session.commit()
            continue
        except gateway.PaymentError as exc:
            _fail_part(session, part, str(exc))
            session.commit()
            continue
        part.status, part.stripe_refund_id, part.error_message = "succeeded", refund_id, None
        session.commit()
    return parts


def _fail_part(session: Session, part: CashRefund, message: str) -> None:
    session.scalar(select(User).where(User.id == part.customer_id).with_for_update())
    part.status, part.error_message = "failed", message
    if part.topup_id is not None:
        topup = session.get(Topup, part.topup_id)
        topup.refunded_cents -= part.amount_cents
    post_entry(
        session,
        customer_id=part.customer_id,
        account="cash",
        amount_cents=part.amount_cents,
        kind="refund_reversal",
        idempotency_key=f"{part.idempotency_key}:reversal",
        reference=part.payment_intent_id,
        note=f"Refund failed at Stripe: {message}"[:500],
    )
    request_settlement(session, part.customer_id)  # the money is back on the cash balance


def recent_refunds(session: Session, customer_id: int | None = None, limit: int = 50) -> list[CashRefund]:
    query = select(CashRefund).order_by(CashRefund.created_at.desc(), CashRefund.id.desc()).limit(limit)
    if customer_id is not None:
        query = query.where(CashRefund.customer_id == customer_id)
    return list(session.scalars(query))
