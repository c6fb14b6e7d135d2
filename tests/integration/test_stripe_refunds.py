import re

import pytest
import stripe as stripe_sdk
from sqlalchemy import func, select

from app.billing.ledger import ledger_balance, post_entry
from app.billing.refunds import RefundError, refund_cash_balance
from app.models import AuditLog, User
from app.models.stripe_events import CashRefund, Topup
from tests.conftest import get_csrf, login
from tests.stripe_support import cash_entries, local_path, pay_checkout

pytestmark = pytest.mark.integration


@pytest.fixture
def topped_up(client, factory, session, quiet_stripe):
    """A customer who topped up 25.00 through Checkout."""
    user = factory.customer(email="refundee@example.com")
    login(client, user.email)
    response = client.post("/balance/topup", data={"amount": "25.00", "csrf_token": get_csrf(client, "/balance")})
    client.get(local_path(pay_checkout(response.headers["Location"]).headers["Location"]))
    session.expire_all()
    assert session.get(User, user.id).cash_balance_cents == 2500
    return user


def _refunds_at_stripe(emulator, pi_id):
    sdk = stripe_sdk.StripeClient("sk_test_paydesk", base_addresses={"api": emulator.api_base})
    return sdk.v1.refunds.list(params={"payment_intent": pi_id}).data


def _admin_client(app, factory):
    admin = factory.admin()
    other = app.test_client()
    with app.app_context():
        login(other, admin.email, "admin-password-1")
    return other, admin


def test_admin_refunds_unspent_cash_to_the_card_once_with_an_audit_entry(app, factory, session, quiet_stripe, topped_up):
    admin_client, admin = _admin_client(app, factory)
    with app.app_context():
        page = admin_client.get(f"/admin/refunds?customer_id={topped_up.id}").get_data(as_text=True)
        assert 'id="refundable">$25.00' in page
        key = re.search(r'name="request_key" type="hidden" value="([^"]+)"', page).group(1)
        data = {"amount": "10.00", "reason": "Customer is leaving", "request_key": key,
                "csrf_token": get_csrf(admin_client, f"/admin/refunds?customer_id={topped_up.id}")}
        first = admin_client.post(f"/admin/refunds/{topped_up.id}", data=data, follow_redirects=True)
        again = admin_client.post(f"/admin/refunds/{topped_up.id}", data=data)  # double submit
    assert "Refunded $10.00" in first.get_data(as_text=True)
    assert again.status_code == 303

    session.expire_all()
    assert session.get(User, topped_up.id).cash_balance_cents == 1500
    assert ledger_balance(session, topped_up.id, "cash") == 1500
    [refund_entry] = cash_entries(session, topped_up.id, kind="refund")
    assert refund_entry.amount_cents == -1000
    [part] = session.scalars(select(CashRefund)).all()
    assert part.status == "succeeded" and part.stripe_refund_id.startswith("re_")
    topup = session.scalar(select(Topup))
    assert topup.refunded_cents == 1000
    assert [r.amount for r in _refunds_at_stripe(quiet_stripe, topup.payment_intent_id)] == [1000]
    audit = session.scalar(select(AuditLog).where(AuditLog.action == "refund_cash_balance"))
    assert audit.actor_id == admin.id and audit.target_id == str(topped_up.id)
    assert audit.before == {"cash_balance_cents": 2500} and audit.after["cash_balance_cents"] == 1500


def test_voucher_balance_is_never_refunded(session, quiet_stripe, topped_up, factory):
    admin = factory.admin()
    post_entry(session, customer_id=topped_up.id, account="voucher", amount_cents=5000, kind="voucher",
               idempotency_key="v1")
    session.commit()
    with pytest.raises(RefundError, match=r"At most \$25.00"):
        refund_cash_balance(session, actor_id=admin.id, customer_id=topped_up.id, amount_cents=3000,
                            reason="too much", request_key="k-too-much")
    session.expire_all()
    assert session.get(User, topped_up.id).voucher_balance_cents == 5000
    assert session.get(User, topped_up.id).cash_balance_cents == 2500
    assert session.scalar(select(func.count(CashRefund.id))) == 0


def test_a_refund_stripe_refuses_is_credited_back(session, quiet_stripe, topped_up, factory):
    admin = factory.admin()
    topup = session.scalar(select(Topup))
    topup.payment_intent_id = "pi_does_not_exist"
    session.commit()
    outcome = refund_cash_balance(session, actor_id=admin.id, customer_id=topped_up.id, amount_cents=500,
                                  reason="test", request_key="k-refused")
    assert outcome.failed_cents == 500
    session.expire_all()
    assert session.get(User, topped_up.id).cash_balance_cents == 2500
    assert ledger_balance(session, topped_up.id, "cash") == 2500
    assert session.scalar(select(Topup)).refunded_cents == 0


def test_a_refund_timing_out_stays_pending_and_the_retry_refunds_once(app, session, quiet_stripe, topped_up, factory):
    from app.billing.refunds import send_pending_refunds

    admin = factory.admin()
    quiet_stripe.set_fault("/v1/refunds", "error_after_forward")
    outcome = refund_cash_balance(session, actor_id=admin.id, customer_id=topped_up.id, amount_cents=700,
                                  reason="test", request_key="k-unknown")
    assert outcome.pending_cents == 700
    session.expire_all()
    assert session.get(User, topped_up.id).cash_balance_cents == 1800
    send_pending_refunds(session)
    part = session.scalar(select(CashRefund))
    assert part.status == "succeeded"
    assert [r.amount for r in _refunds_at_stripe(quiet_stripe, part.payment_intent_id)] == [700]


def test_the_refund_page_needs_an_admin(client, topped_up):
    assert client.get("/admin/refunds").status_code == 403
