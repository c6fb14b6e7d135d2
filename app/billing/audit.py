"""The admin audit log: who did what, when, with before/after. Does not commit."""

from sqlalchemy.orm import Session

from app.models import AuditLog


def record_audit(
    session: Session,
    actor_id: int | None,
    action: str,
    target_type: str,
    target_id,
    before: dict | None = None,
    after: dict | None = None,
) -> AuditLog:
    entry = AuditLog(
        actor_id=actor_id,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        before=before,
        after=after,
    )
    session.add(entry)
    return entry
