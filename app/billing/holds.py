"""Admin holds (SPEC §9, §12): a customer on hold cannot start deployments. Audit-logged."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.billing.audit import record_audit
from app.models import User


class HoldError(Exception):
    """Base of hold errors; `str(error)` is fit for the admin."""


class UnknownCustomer(HoldError):
    def __init__(self):
        super().__init__("No such customer.")


class HoldReasonRequired(HoldError):
    def __init__(self):
        super().__init__("Say why the customer is put on hold.")


def _lock_customer(session: Session, customer_id: int) -> User:
    customer = session.scalar(select(User).where(User.id == customer_id).with_for_update())
    if customer is None or customer.is_admin:
        session.rollback()
        raise UnknownCustomer()
    return customer


def place_hold(session: Session, actor_id: int, customer_id: int, reason: str) -> User:
    """Put the customer on hold with a reason (placing it again updates the reason). Commits."""
    reason = (reason or "").strip()
    if not reason:
        raise HoldReasonRequired()
    customer = _lock_customer(session, customer_id)
    before = {"on_hold": customer.on_hold, "hold_reason": customer.hold_reason}
    customer.on_hold = True
    customer.hold_reason = reason[:2000]
    record_audit(session, actor_id, "customer.hold", "customer", customer_id, before=before,
                 after={"on_hold": True, "hold_reason": customer.hold_reason})
    session.commit()
    return customer


def lift_hold(session: Session, actor_id: int, customer_id: int) -> User:
    """Lift the hold (no-op, but still logged, when there is none). Commits."""
    customer = _lock_customer(session, customer_id)
    before = {"on_hold": customer.on_hold, "hold_reason": customer.hold_reason}
    customer.on_hold = False
    customer.hold_reason = None
    record_audit(session, actor_id, "customer.lift_hold", "customer", customer_id, before=before,
                 after={"on_hold": False, "hold_reason": None})
    session.commit()
    return customer
