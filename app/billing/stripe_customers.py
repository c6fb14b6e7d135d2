"""The Paydesk customer ↔ Stripe customer mapping (billing_customers)."""

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.models import BillingCustomer, User
from app.payments import gateway


def stripe_customer_id_of(session: Session, customer_id: int) -> str | None:
    return session.scalar(select(BillingCustomer.stripe_customer_id).where(BillingCustomer.customer_id == customer_id))


def customer_id_for(session: Session, stripe_customer_id: str | None) -> int | None:
    """Map a Stripe customer id (from an event or object) back to the Paydesk customer."""
    if not stripe_customer_id:
        return None
    return session.scalar(
        select(BillingCustomer.customer_id).where(BillingCustomer.stripe_customer_id == stripe_customer_id)
    )


def ensure_stripe_customer(session: Session, customer_id: int) -> str:
    """Return the customer's Stripe customer id, creating and storing it on first use. Commits.

    Race-safe: the first call locks the user row (PostgreSQL), so a concurrent first call waits and
    then finds the stored record; Stripe is asked with a per-customer idempotency key, and the
    insert is ON CONFLICT DO NOTHING, so however the calls interleave one record is stored (a
    Stripe customer that lost the race is deleted).
    """
    existing = stripe_customer_id_of(session, customer_id)
    if existing:
        return existing
    user = session.scalar(select(User).where(User.id == customer_id).with_for_update())
    existing = stripe_customer_id_of(session, customer_id)
    if existing:
        session.commit()
        return existing
    try:
        created = gateway.create_customer(
            email=user.email, name=user.name, customer_id=customer_id, idempotency_key=f"paydesk-customer-{customer_id}"
        )
    except Exception:
        session.rollback()
        raise
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(BillingCustomer)
        .values(customer_id=customer_id, stripe_customer_id=created)
        .on_conflict_do_nothing()
    )
    session.commit()
    stored = stripe_customer_id_of(session, customer_id)
    if stored != created:
        gateway.delete_customer(created)
    return stored
