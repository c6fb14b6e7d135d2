"""Claiming outbox rows that a job sends exactly once (emails, in `dunning_notices` and
`notifications`).

A row moves `pending` → `sending` (claimed by one job until `claimed_until`) → a final state the
caller names (`sent`, `cancelled`, `skipped`). A failed send puts it back to `pending` with a later
`next_attempt_at`; a job that died leaves a claim that expires. `due_ids` is what the periodic sweep
re-enqueues: rows whose retry time came or whose claim expired. Every function takes the model,
which needs the columns `id`, `status`, `next_attempt_at`, `claimed_until`, `attempts`, `last_error`.

Exactly once: only one transaction can move a row from `pending` to `sending` (a conditional
UPDATE), so two jobs for the same row never both send. (A crash between the SMTP server accepting
and the final commit can repeat that one email; the Message-ID is stable so mail clients collapse it.)
"""

from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session


def _claimable(model, now: datetime):
    return or_(model.status == "pending", (model.status == "sending") & (model.claimed_until < now))


def claim(session: Session, model, row_id: int, now: datetime, hold: timedelta):
    """Take the right to send one row (pending, or a claim that expired). Commits. Returns the row
    or None when another job has it or it is done."""
    result = session.execute(
        update(model).where(model.id == row_id, _claimable(model, now))
        .values(status="sending", claimed_until=now + hold)
    )
    session.commit()
    if result.rowcount != 1:
        return None
    return session.get(model, row_id, populate_existing=True)


def finish(session: Session, model, row_id: int, status: str, *, count_attempt: bool = True, **values) -> bool:
    """Move a claimed row to its final `status` (plus `values`). Commits. False when the claim was lost."""
    changes = {"status": status, "claimed_until": None, **values}
    if count_attempt:
        changes["attempts"] = model.attempts + 1
    result = session.execute(update(model).where(model.id == row_id, model.status == "sending").values(changes))
    session.commit()
    return result.rowcount == 1


def release_after_failure(session: Session, model, row_id: int, now: datetime, error: str,
                          backoff: tuple[timedelta, ...]) -> None:
    """A send failed: back to pending, retried after the next backoff step. Commits."""
    row = session.scalar(select(model).where(model.id == row_id).with_for_update())
    if row is None or row.status != "sending":
        session.rollback()
        return
    row.attempts += 1
    row.status = "pending"
    row.claimed_until = None
    row.last_error = error[:500]
    row.next_attempt_at = now + backoff[min(row.attempts, len(backoff)) - 1]
    session.commit()


def due_ids(session: Session, model, now: datetime, requeue_after: timedelta, limit: int = 500) -> list[int]:
    """Rows that should have gone out by now (lost job, failed send whose retry time came, expired
    claim); their retry time is pushed forward so concurrent sweeps do not pile up jobs. Commits."""
    rows = session.scalars(
        select(model)
        .where(or_(
            (model.status == "pending") & (model.next_attempt_at <= now),
            (model.status == "sending") & (model.claimed_until < now),
        ))
        .order_by(model.id).limit(limit).with_for_update(skip_locked=True)
    ).all()
    for row in rows:
        row.next_attempt_at = now + requeue_after
    ids = [row.id for row in rows]
    session.commit()
    return ids
