"""Can the customer deploy? (SPEC §9)."""

from datetime import UTC, datetime

import pytest

from app.billing.can_deploy import can_deploy
from app.billing.ledger import post_entry
from tests.integration.usage_helpers import add_card, make_plan, run_deployment

pytestmark = pytest.mark.integration

# 10 days (240 h) before the end of November 2026
NOW = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)


def _voucher(session, customer, cents):
    post_entry(session, customer_id=customer.id, account="voucher", amount_cents=cents, kind="voucher_redemption",
               idempotency_key=f"test-voucher-{customer.id}-{cents}")
    session.commit()


def test_card_holder_may_deploy(session, factory):
    customer = factory.customer()
    make_plan(session)
    add_card(session, customer)
    decision = can_deploy(session, customer.id, "vm-small", NOW)
    assert (decision.allowed, decision.code) == (True, "card")


def test_expired_or_removed_cards_do_not_count(session, factory):
    customer = factory.customer()
    make_plan(session)
    add_card(session, customer, exp_year=2020)
    add_card(session, customer, removed=True)
    decision = can_deploy(session, customer.id, "vm-small", NOW)
    assert (decision.allowed, decision.code) == (False, "no_payment_method")
    assert "No usable card: Visa ending 4242 (12/2020) has expired." in decision.reason


def test_voucher_only_customer_may_deploy_only_while_the_voucher_covers_the_rest_of_the_month(session, factory):
    customer = factory.customer()
    make_plan(session, price="0.100000")  # 240 h left in the month → 24.00 per deployment
    run_deployment(session, customer, "already-running", "vm-small", "2026-11-01T00:00:00")
    _voucher(session, customer, 4799)
    decision = can_deploy(session, customer.id, "vm-small", NOW)
    assert (decision.allowed, decision.code, decision.required_cents) == (False, "insufficient_voucher", 4800)
    assert "voucher balance ($47.99)" in decision.reason
    _voucher(session, customer, 1)
    decision = can_deploy(session, customer.id, "vm-small", NOW)
    assert (decision.allowed, decision.code, decision.required_cents) == (True, "voucher", 4800)


def test_disputed_or_held_customers_may_not_deploy_and_are_told_why(session, factory):
    make_plan(session)
    disputed = factory.customer(disputed=True)
    held = factory.customer(on_hold=True, hold_reason="Unpaid since March")
    add_card(session, disputed)
    add_card(session, held)
    d = can_deploy(session, disputed.id, "vm-small", NOW)
    h = can_deploy(session, held.id, "vm-small", NOW)
    assert (d.allowed, d.code, d.reason) == (False, "disputed", "The customer has an open card dispute.")
    assert (h.allowed, h.code, h.reason) == (False, "on_hold", "The customer's account is on hold: Unpaid since March")
