"""`request_settlement`: the one entry point every funds-arrival path calls.

Design (outbox): the request is a `settlement_requests` row written in the caller's transaction,
so it commits or rolls back with the funds that prompted it. After the transaction commits, an
RQ job is enqueued; if Redis is down the enqueue fails quietly (logged) and the periodic sweep
(`jobs.settlement.sweep_settlement_requests`) picks the row up later. Repeated requests for one
customer coalesce into the same row (its `generation` moves).
"""

import logging

from sqlalchemy import event, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.models import SettlementRequest
from app.models.base import utcnow

log = logging.getLogger(__name__)
_PENDING_KEY = "paydesk_pending_settlements"


def request_settlement(session: Session, customer_id: int) -> None:
    """Mark the customer as needing settlement; the job is enqueued once the caller commits."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(SettlementRequest).values(customer_id=customer_id, generation=1, requested_at=utcnow())
    stmt = stmt.on_conflict_do_update(
        index_elements=[SettlementRequest.customer_id],
        set_={"generation": SettlementRequest.generation + 1, "requested_at": utcnow()},
    )
    session.execute(stmt)
    session.info.setdefault(_PENDING_KEY, set()).add(customer_id)


def pending_settlement_customers(session: Session, limit: int = 500) -> list[int]:
    return list(
        session.scalars(
            select(SettlementRequest.customer_id).order_by(SettlementRequest.requested_at).limit(limit)
        )
    )


@event.listens_for(Session, "after_commit")
def _enqueue_after_commit(session: Session) -> None:
    customers = session.info.pop(_PENDING_KEY, None)
    if not customers:
        return
    from jobs.queue import enqueue_settlement

    for customer_id in sorted(customers):
        enqueue_settlement(customer_id)


@event.listens_for(Session, "after_rollback")
def _forget_on_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)
