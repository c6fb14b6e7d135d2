"""Ledger invariants: append-only entries, idempotent keys, cached balance == sum, never negative;
and a property-based run of random credits, invoices and settlements."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from app.billing.ledger import InsufficientFunds, ledger_balance, post_entry
from app.billing.settlement import settle_customer
from app.models import Invoice, LedgerEntry, User
from tests.conftest import truncate_all
from tests.money_support import assert_money_invariants, credit, make_invoice

pytestmark = pytest.mark.integration


def test_the_same_idempotency_key_posts_once(session, factory):
    customer = factory.customer()
    for _ in range(3):
        post_entry(session, customer_id=customer.id, account="cash", amount_cents=500, kind="topup",
                   idempotency_key="topup:pi_1")
        session.commit()
    assert len(list(session.scalars(select(LedgerEntry)))) == 1
    assert session.get(User, customer.id).cash_balance_cents == 500 == ledger_balance(session, customer.id, "cash")


def test_a_debit_below_zero_is_refused_and_changes_nothing(session, factory):
    customer = factory.customer()
    credit(session, customer.id, "voucher", 100)
    with pytest.raises(InsufficientFunds):
        post_entry(session, customer_id=customer.id, account="voucher", amount_cents=-101, kind="x",
                   idempotency_key="too-much")
    session.commit()
    session.expire_all()
    assert session.get(User, customer.id).voucher_balance_cents == 100
    assert session.scalar(select(LedgerEntry).where(LedgerEntry.idempotency_key == "too-much")) is None


def test_a_float_amount_is_refused(session, factory):
    customer = factory.customer()
    with pytest.raises(TypeError):
        post_entry(session, customer_id=customer.id, account="cash", amount_cents=1.5, kind="x", idempotency_key="f")


step = st.one_of(
    st.tuples(st.just("voucher"), st.integers(1, 3000)),
    st.tuples(st.just("cash"), st.integers(1, 3000)),
    st.tuples(st.just("invoice"), st.integers(1, 4000)),
    st.tuples(st.just("settle"), st.just(0)),
)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(step, min_size=1, max_size=12))
def test_random_credits_invoices_and_settlements_keep_the_invariants(app, steps):
    from app import accounts
    from app.extensions import db

    truncate_all(app.extensions["paydesk_engine"])
    session = db.new_session()
    try:
        customer = accounts.create_user(session, "prop@example.com", "correct-horse-battery")
        session.commit()
        funds = 0
        for kind, amount in steps:
            if kind in ("voucher", "cash"):
                credit(session, customer.id, kind, amount)
                funds += amount
            elif kind == "invoice":
                make_invoice(session, customer.id, amount)
            else:
                settle_customer(session, customer.id)
            assert_money_invariants(session, customer.id)
        settle_customer(session, customer.id)
        assert_money_invariants(session, customer.id)
        session.expire_all()
        user = session.get(User, customer.id)
        paid = sum(i.paid_cents for i in session.scalars(select(Invoice)))
        assert paid + user.cash_balance_cents + user.voucher_balance_cents == funds
        # after settling, either no money is left or no invoice is left open
        still_open = [i for i in session.scalars(select(Invoice)) if i.state == "open"]
        assert not still_open or user.cash_balance_cents + user.voucher_balance_cents == 0
    finally:
        session.close()
