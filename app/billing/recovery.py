"""Recovery after payment (SPEC §16): paying what is overdue before deletion lifts the deletion marks.

Where it hooks in: not per payment source, but where an invoice leaves `open` (paid, voided,
written off) — whatever paid it (top-up, voucher, card, bank transfer, credit note). A flush
listener notes the customers whose invoices left `open`; just before that transaction commits,
`lift_deletion_marks_if_settled` runs for them in the same transaction. The set-based bulk
settlement (raw SQL) calls `recheck_deletion_marks` itself, and the periodic dunning run and an
admin's grace extension call the lift directly (a safety net for anything else).

What lifting does, in the caller's transaction: clears the marks (so the platform API's billing
status stops listing them), queues the signed `deployments.unmarked` platform event (outbox,
delivered right after commit) and the customer's email (once per marking). Admin holds are a
separate flag on the customer and are never touched here.
"""

from datetime import UTC, datetime

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, attributes

from app.billing.notifications import queue_notification
from app.models import Invoice
from app.models.base import utcnow
from app.models.dunning import DunningAccount
from app.models.usage import Deployment

UNMARK_EVENT = "deployments.unmarked"
_RECHECK_KEY = "paydesk_recheck_deletion_marks"
_GONE = ("deleted", "failed")


def recheck_deletion_marks(session: Session, customer_ids) -> None:
    """Ask for these customers' deletion marks to be re-checked before the session commits."""
    session.info.setdefault(_RECHECK_KEY, set()).update(customer_ids)


def _marked_count(session: Session, customer_id: int) -> int:
    return session.scalar(
        select(func.count(Deployment.id)).where(
            Deployment.customer_id == customer_id, Deployment.marked_for_deletion_at.is_not(None),
            Deployment.state.notin_(_GONE),
        )
    ) or 0


def lift_deletion_marks_if_settled(session: Session, customer_id: int, now: datetime | None = None,
                                   *, cause: str = "paid") -> list[int]:
    """Lift the customer's deletion marks when no unpaid invoice is past its deletion date any more
    (paid, voided, credited, or the grace was extended). Returns the ids unmarked. Does not commit."""
    now = now or utcnow()
    if not _marked_count(session, customer_id):
        return []
    from app.billing.dunning import deletion_due_at

    due = deletion_due_at(session, customer_id)
    if due is not None and due <= now:
        return []
    from app.platform_notify import enqueue_after_commit, record_platform_event

    # Lock every live deployment of the customer (not only the marked ones: a mark committed by a
    # concurrent dunning run after this transaction's snapshot is seen once its lock is released).
    deployments = session.scalars(
        select(Deployment).where(Deployment.customer_id == customer_id, Deployment.state.notin_(_GONE))
        .order_by(Deployment.id).with_for_update().execution_options(populate_existing=True)
    ).all()
    lifted = [d for d in deployments if d.marked_for_deletion_at is not None]
    if not lifted:
        return []
    marked_since = min(d.marked_for_deletion_at for d in lifted)
    for deployment in lifted:
        deployment.marked_for_deletion_at = None
        deployment.deletion_reason = None
    account = session.get(DunningAccount, customer_id)
    if account is not None:
        account.deletion_requested_at = None
        account.updated_at = now
    listed = [{"id": d.id, "external_id": d.external_id, "name": d.name} for d in lifted]
    delivery = record_platform_event(session, customer_id, UNMARK_EVENT, {
        "customer_id": customer_id,
        "reason": "grace_extended" if cause == "grace_extended" else "overdue_invoices_paid",
        "marked_since": marked_since.astimezone(UTC).isoformat(),
        "deployments": listed,
    }, now=now)
    if delivery is not None:
        enqueue_after_commit(session, delivery.id)
    queue_notification(
        session, user_id=customer_id, kind="deletion_lifted",
        key=f"deletion-lifted:{customer_id}:{marked_since.astimezone(UTC):%Y%m%dT%H%M%S}",
        subject="Your deployments are no longer marked for deletion",
        template="deletion_lifted",
        context={"deployments": [d["name"] for d in listed], "cause": cause,
                 "as_of": now.astimezone(UTC).strftime("%d %B %Y, %H:%M UTC")},
    )
    session.flush()
    return [d.id for d in lifted]


def _left_open(obj) -> bool:
    if not isinstance(obj, Invoice):
        return False
    history = attributes.get_history(obj, "state")
    return bool(history.deleted) and "open" in history.deleted and obj.state != "open"


@event.listens_for(Session, "after_flush")
def _note_invoices_leaving_open(session: Session, _flush_context) -> None:
    customers = {obj.customer_id for obj in session.dirty if _left_open(obj)}
    if customers:
        recheck_deletion_marks(session, customers)


@event.listens_for(Session, "before_commit")
def _lift_before_commit(session: Session) -> None:
    customers = session.info.pop(_RECHECK_KEY, None)
    if not customers:
        return
    for customer_id in sorted(customers):
        lift_deletion_marks_if_settled(session, customer_id)


@event.listens_for(Session, "after_rollback")
def _forget_on_rollback(session: Session) -> None:
    session.info.pop(_RECHECK_KEY, None)
