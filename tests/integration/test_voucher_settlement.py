"""Redeeming a voucher settles an open invoice end to end: HTTP redeem → outbox → RQ → a real
`rq worker --burst` → settlement pays the invoice from the voucher balance (SPEC §5, §8)."""

import pytest
from sqlalchemy import select

from app.billing import vouchers as v
from app.billing.ledger import ledger_balance
from app.models import Invoice, InvoicePayment, User
from tests.conftest import get_csrf, login

pytestmark = pytest.mark.integration
invoices = pytest.importorskip("app.billing.invoices", reason="money core (create_invoice/issue_invoice) not merged yet")


def test_redeeming_a_voucher_pays_an_open_invoice_through_the_worker(client, session, factory, worker):
    customer = factory.customer()
    invoice = invoices.create_invoice(
        session, customer.id, [invoices.LineSpec(description="VM small, March", amount_cents=1800)], tax_rate=0
    )
    invoice = invoices.issue_invoice(session, invoice.id)
    session.commit()
    worker.run_burst()  # nothing to pay with yet: the invoice stays open
    session.expire_all()
    assert session.get(Invoice, invoice.id).state == "open"

    code = v.create_voucher_batch(
        session, actor_id=None, count=1, value_cents=5000, max_redemptions=1, expires_at=None, note=None,
        request_key="settle-test",
    ).codes[0][1]
    login(client, customer.email)
    response = client.post(
        "/vouchers/redeem", data={"code": code},
        headers={"HX-Request": "true", "X-CSRFToken": get_csrf(client, "/dashboard")},
    )
    assert response.status_code == 200

    worker.run_burst()

    session.expire_all()
    paid = session.get(Invoice, invoice.id)
    assert paid.state == "paid" and paid.paid_cents == 1800
    payments = session.scalars(select(InvoicePayment).where(InvoicePayment.invoice_id == invoice.id)).all()
    assert [(p.source, p.amount_cents) for p in payments] == [("voucher", 1800)]
    user = session.get(User, customer.id)
    assert user.voucher_balance_cents == 3200 == ledger_balance(session, customer.id, "voucher")
    assert user.cash_balance_cents == 0  # voucher credit is never turned into cash
