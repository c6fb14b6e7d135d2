"""Demo data for the embedded default. Idempotent: running it twice adds nothing."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import accounts
from app.models import User

DEMO_ADMIN = ("admin@example.com", "admin-password")
DEMO_CUSTOMER = ("customer@example.com", "customer-password")


def seed_demo(session: Session) -> list[str]:
    lines = []
    for (email, password), is_admin, name in ((DEMO_ADMIN, True, "Demo Admin"), (DEMO_CUSTOMER, False, "Demo Customer")):
        if session.scalar(select(User.id).where(User.email == email)) is None:
            accounts.create_user(session, email, password, is_admin=is_admin, name=name)
        lines.append(f"{'admin' if is_admin else 'customer'}: {email} / {password}")
    from app.billing.vouchers import ensure_demo_voucher

    lines.append(f"voucher: {ensure_demo_voucher(session)}")
    from app.billing.pricing import ensure_demo_plans

    lines.append(f"plans: {ensure_demo_plans(session)} created")
    return lines
