"""`request_settlement`: the one entry point every funds-arrival path calls.

Design (outbox): the request is a `settlement_requests` row written in the caller's transaction,
so it commits or rolls back with the funds that prompted it. After the transaction commits, an
RQ job is enqueued; if Redis is down the enqueue fails quietly (logged) and the periodic sweep
(`jobs.settlement.sweep_settlement_requests`) picks the row up later. Repeated requests for one
customer coalesce into the same row (its `generation` moves).

Enqueues coalesce too: the upsert also claims `enqueued_at` and says whether this transaction must
enqueue. It does not when the row was already waiting and a job was enqueued for it less than
`ENQUEUE_COALESCE_SECONDS` ago: that job has not run yet (it will see this request), or is running
(it loops while the generation moves, see `_settle_rounds`), or it left the row behind on purpose
(incomplete settlement) — which the sweep retries anyway. A row deleted by a finished job is
inserted afresh and always enqueues. If the enqueue after commit fails, the sweep catches up.
"""

import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import bindparam, event, select, text
from sqlalchemy.orm import Session

from app.models import SettlementRequest
from app.models.base import UTCDateTime, utcnow

log = logging.getLogger(__name__)
_PENDING_KEY = "paydesk_pending_settlements"
ENQUEUE_COALESCE_SECONDS = 5.0
_enqueue_settlement: Callable[[int], object] | None = None


def set_settlement_enqueuer(enqueue: Callable[[int], object]) -> None:
    """How a committed request reaches a worker. `jobs` registers it when the app is built
    (billing never imports jobs); without one, requests wait for the periodic sweep."""
    global _enqueue_settlement
    _enqueue_settlement = enqueue


def settlement_enqueuer() -> Callable[[int], object] | None:
    """The registered enqueuer (a notification sender that batches with it may take its work)."""
    return _enqueue_settlement

# The upsert's conflict rule (the generation moves; `enqueued_at` is claimed unless a job was enqueued
# after :coalesce_after), shared with statements that write the request together with the funds
# (app.billing.topups). PostgreSQL and SQLite share the syntax.
UPSERT_ON_CONFLICT_SQL = (
    "ON CONFLICT (customer_id) DO UPDATE SET generation = settlement_requests.generation + 1, "
    "requested_at = excluded.requested_at, "
    "enqueued_at = CASE WHEN settlement_requests.enqueued_at > :coalesce_after "
    "THEN settlement_requests.enqueued_at ELSE excluded.enqueued_at END "
    "RETURNING enqueued_at"
)
# Built once (hot path of every funds arrival).
_UPSERT = (
    text(
        "INSERT INTO settlement_requests (customer_id, generation, requested_at, enqueued_at) "
        "VALUES (:customer_id, 1, :now, :now) " + UPSERT_ON_CONFLICT_SQL
    )
    .bindparams(bindparam("now", type_=UTCDateTime()), bindparam("coalesce_after", type_=UTCDateTime()))
    .columns(enqueued_at=UTCDateTime())
)


def request_settlement(session: Session, customer_id: int) -> None:
    """Mark the customer as needing settlement; the job is enqueued once the caller commits
    (unless one was enqueued for the still-waiting request moments ago, see the module docstring)."""
    now = utcnow()
    enqueued_at = (
        session.connection()
        .execute(_UPSERT, {"customer_id": customer_id, "now": now, "coalesce_after": coalesce_after(now)})
        .scalar_one()
    )
    note_upserted(session, customer_id, enqueued_at, now)


def coalesce_after(now):
    """The `:coalesce_after` of UPSERT_ON_CONFLICT_SQL for an upsert at `now`."""
    return now - timedelta(seconds=ENQUEUE_COALESCE_SECONDS)


def note_upserted(session: Session, customer_id: int, enqueued_at, now) -> None:
    """After an upsert at `now` that returned `enqueued_at`: when this transaction claimed the
    enqueue, the job is enqueued once it commits."""
    if enqueued_at == now:
        session.info.setdefault(_PENDING_KEY, set()).add(customer_id)


def pop_pending_enqueues(session: Session) -> list[int]:
    """The customers whose settlement job this (committed) transaction must enqueue, handed over once."""
    return sorted(session.info.pop(_PENDING_KEY, ()))


def pending_settlement_customers(session: Session, limit: int = 500) -> list[int]:
    return list(
        session.scalars(
            select(SettlementRequest.customer_id).order_by(SettlementRequest.requested_at).limit(limit)
        )
    )


@event.listens_for(Session, "after_commit")
def _enqueue_after_commit(session: Session) -> None:
    customers = pop_pending_enqueues(session)
    if not customers or _enqueue_settlement is None:
        return
    for customer_id in customers:
        _enqueue_settlement(customer_id)


@event.listens_for(Session, "after_rollback")
def _forget_on_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)
