"""Invoices: gapless numbers under concurrency, immutability, void and bank transfer."""

import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select

from app.billing.invoices import (
    InvoiceImmutable,
    InvoiceNotOpen,
    LineSpec,
    create_invoice,
    issue_invoice,
    record_bank_transfer,
    void_invoice,
)
from app.billing.settlement import settle_customer
from app.models import AuditLog, Invoice, InvoiceLine, User
from tests.money_support import assert_money_invariants, credit, make_invoice

pytestmark = pytest.mark.integration


def test_fifty_invoices_issued_concurrently_get_numbers_one_to_fifty(app, session, factory):
    from app.extensions import db

    customers = [factory.customer() for _ in range(5)]
    drafts = [make_invoice(session, customers[n % 5].id, 100 + n, issue=False) for n in range(50)]
    now = datetime(2031, 3, 1, tzinfo=UTC)
    barrier = threading.Barrier(25)
    errors = []

    def issue(ids):
        with app.app_context():
            s = db.new_session()
            try:
                barrier.wait()
                for invoice_id in ids:
                    issue_invoice(s, invoice_id, now=now)
                    s.commit()
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                s.close()

    threads = [threading.Thread(target=issue, args=([d.id for d in drafts[n::25]],)) for n in range(25)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    session.expire_all()
    numbers = sorted(session.scalars(select(Invoice.number).where(Invoice.number_year == 2031)))
    assert numbers == [f"2031-{n:06d}" for n in range(1, 51)]


def test_a_rolled_back_issue_leaves_no_gap(session, factory):
    customer = factory.customer()
    now = datetime(2032, 1, 5, tzinfo=UTC)
    first = make_invoice(session, customer.id, 100, issue=False)
    issue_invoice(session, first.id, now=now)
    session.rollback()
    second = make_invoice(session, customer.id, 200, now=now)
    assert second.number == "2032-000001"


def test_create_invoice_computes_tax_on_the_subtotal_rounded_once(session, factory):
    customer = factory.customer(name="Ada", company="Engines Ltd", country="DE")
    invoice = create_invoice(
        session, customer.id, [LineSpec("vm-a", 1005), LineSpec("vm-b", 1000)], tax_rate=Decimal("0.19")
    )
    assert (invoice.subtotal_cents, invoice.tax_cents, invoice.total_cents) == (2005, 381, 2386)
    issue_invoice(session, invoice.id)
    session.commit()
    assert invoice.state == "open" and invoice.buyer_company == "Engines Ltd"


@pytest.mark.parametrize(
    "change",
    [
        lambda inv, line: setattr(inv, "total_cents", inv.total_cents + 1),
        lambda inv, line: setattr(inv, "number", "2099-000001"),
        lambda inv, line: setattr(inv, "buyer_name", "Someone else"),
        lambda inv, line: setattr(line, "amount_cents", 1),
        lambda inv, line: inv.lines.append(InvoiceLine(position=9, description="extra", amount_cents=5)),
        lambda inv, line: setattr(inv, "state", "draft"),
    ],
    ids=["total", "number", "buyer", "line amount", "new line", "back to draft"],
)
def test_an_issued_invoice_refuses_changes(session, factory, change):
    customer = factory.customer()
    invoice = make_invoice(session, customer.id, 1234)
    line = invoice.lines[0]
    change(invoice, line)
    with pytest.raises(InvoiceImmutable):
        session.flush()
    session.rollback()
    session.expire_all()
    stored = session.get(Invoice, invoice.id)
    assert (stored.total_cents, stored.lines[0].amount_cents, stored.state) == (1234, 1234, "open")


def test_issued_invoices_are_never_deleted(session, factory):
    invoice = make_invoice(session, factory.customer().id, 500)
    session.delete(invoice)
    with pytest.raises(InvoiceImmutable):
        session.flush()
    session.rollback()


def test_a_draft_can_still_be_edited(session, factory):
    invoice = make_invoice(session, factory.customer().id, 500, issue=False)
    invoice.lines[0].description = "Corrected"
    session.commit()
    assert session.get(InvoiceLine, invoice.lines[0].id).description == "Corrected"


def test_voiding_an_open_invoice_returns_its_partial_payments(session, factory):
    customer = factory.customer()
    admin = factory.admin()
    invoice = make_invoice(session, customer.id, 1000)
    credit(session, customer.id, "voucher", 300)
    credit(session, customer.id, "cash", 200)
    settle_customer(session, customer.id)

    void_invoice(session, invoice.id, actor_id=admin.id, reason="duplicate")

    session.expire_all()
    user = session.get(User, customer.id)
    assert (user.voucher_balance_cents, user.cash_balance_cents) == (300, 200)
    assert session.get(Invoice, invoice.id).state == "void"
    audit = session.scalar(select(AuditLog).where(AuditLog.action == "invoice.void"))
    assert audit.actor_id == admin.id and audit.before["state"] == "open" and audit.after["reason"] == "duplicate"
    with pytest.raises(InvoiceNotOpen):
        void_invoice(session, invoice.id, actor_id=admin.id)
    assert_money_invariants(session, customer.id)


def test_bank_transfer_pays_the_rest_and_is_audited(session, factory):
    customer = factory.customer()
    admin = factory.admin()
    invoice = make_invoice(session, customer.id, 1000)
    credit(session, customer.id, "cash", 250)
    settle_customer(session, customer.id)

    payment = record_bank_transfer(session, invoice.id, actor_id=admin.id, reference="SEPA 42")

    session.expire_all()
    assert payment.amount_cents == 750
    assert session.get(Invoice, invoice.id).state == "paid"
    assert session.scalar(select(AuditLog.action)) == "invoice.bank_transfer"
    with pytest.raises(InvoiceNotOpen):
        record_bank_transfer(session, invoice.id, actor_id=admin.id)
    assert_money_invariants(session, customer.id)
