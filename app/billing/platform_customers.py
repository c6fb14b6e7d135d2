"""How the provisioning platform finds a customer: by email, or by its own reference (`external_ref`),
which it sets itself. Customers only (never admins)."""

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.billing.audit import record_audit
from app.models import User


class UnknownCustomer(LookupError):
    pass


class ExternalRefTaken(ValueError):
    def __init__(self):
        super().__init__("Another customer already has this external_ref.")


def find_customers(session: Session, *, email: str | None = None, external_ref: str | None = None) -> list[User]:
    """Customers matching the email (case-insensitive, as at login) or the external reference
    (exact). At most one matches either way (both are unique)."""
    query = select(User).where(User.is_admin.is_(False))
    if email is not None:
        query = query.where(func.lower(User.email) == email.strip().lower())
    if external_ref is not None:
        query = query.where(User.external_ref == external_ref)
    return list(session.scalars(query.order_by(User.id).limit(2)))


def get_customer(session: Session, customer_id: int) -> User:
    customer = session.get(User, customer_id)
    if customer is None or customer.is_admin:
        raise UnknownCustomer("No such customer.")
    return customer


def set_external_ref(session: Session, customer_id: int, external_ref: str | None) -> User:
    """Set (or clear, with None) the platform's reference of a customer; idempotent; audited when it
    changes; commits. Raises UnknownCustomer or ExternalRefTaken (the unique index decides races)."""
    customer = session.scalar(select(User).where(User.id == customer_id).with_for_update())
    if customer is None or customer.is_admin:
        session.rollback()
        raise UnknownCustomer("No such customer.")
    before = customer.external_ref
    if before == external_ref:
        session.commit()
        return customer
    customer.external_ref = external_ref
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise ExternalRefTaken() from None
    record_audit(session, None, "customer.external_ref", "user", customer_id,
                 {"external_ref": before}, {"external_ref": external_ref})
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ExternalRefTaken() from None
    return customer
