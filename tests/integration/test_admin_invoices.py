"""Admin invoice and customer pages: filters, CSV, void, bank transfer, balance adjustment, audit."""

import csv
import io

import pytest
from sqlalchemy import select

from app.models import AuditLog, Invoice, LedgerEntry, SettlementRequest, User
from tests.conftest import get_csrf, login
from tests.money_support import assert_money_invariants, make_invoice

pytestmark = pytest.mark.integration


@pytest.fixture
def admin_client(client, factory, session):
    factory.admin()
    session.commit()
    login(client, "root@example.com", "admin-password-1")
    return client


def test_invoice_list_filters_and_exports_csv(admin_client, session, factory):
    alice = factory.customer("alice@example.com")
    bob = factory.customer("bob@example.com")
    a = make_invoice(session, alice.id, 1000)
    b = make_invoice(session, bob.id, 2500)
    html = admin_client.get("/admin/invoices?customer=alice").get_data(as_text=True)
    assert a.number in html and b.number not in html
    html = admin_client.get(f"/admin/invoices?state=open&period={a.issued_at:%Y-%m}").get_data(as_text=True)
    assert a.number in html and b.number in html
    response = admin_client.get("/admin/invoices.csv?customer=bob")
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [(r["number"], r["email"], r["total"], r["due"]) for r in rows] == [(b.number, "bob@example.com", "25.00", "25.00")]
    assert [r["due_date"] for r in rows] == [b.due_at.date().isoformat()]


def test_admin_voids_an_open_invoice_and_it_is_audited(admin_client, session, factory):
    customer = factory.customer()
    invoice = make_invoice(session, customer.id, 1000)
    token = get_csrf(admin_client, f"/admin/invoices/{invoice.id}")
    response = admin_client.post(f"/admin/invoices/{invoice.id}/void", data={"csrf_token": token, "reason": "typo"})
    assert response.status_code == 303
    session.expire_all()
    assert session.get(Invoice, invoice.id).state == "void"
    assert session.scalar(select(AuditLog).where(AuditLog.action == "invoice.void")).after["reason"] == "typo"
    again = admin_client.post(f"/admin/invoices/{invoice.id}/void", data={"csrf_token": token})
    assert again.status_code == 409


def test_admin_records_a_bank_transfer(admin_client, session, factory):
    customer = factory.customer()
    invoice = make_invoice(session, customer.id, 1000)
    token = get_csrf(admin_client, f"/admin/invoices/{invoice.id}")
    response = admin_client.post(f"/admin/invoices/{invoice.id}/bank-transfer",
                                 data={"csrf_token": token, "amount": "4.00", "reference": "SEPA-1"})
    assert response.status_code == 303
    session.expire_all()
    stored = session.get(Invoice, invoice.id)
    assert (stored.state, stored.paid_cents) == ("open", 400)
    admin_client.post(f"/admin/invoices/{invoice.id}/bank-transfer", data={"csrf_token": token})
    session.expire_all()
    assert session.get(Invoice, invoice.id).state == "paid"
    assert len(list(session.scalars(select(AuditLog).where(AuditLog.action == "invoice.bank_transfer")))) == 2
    assert_money_invariants(session, customer.id)


def test_balance_adjustment_needs_a_reason_then_credits_audits_and_settles(admin_client, session, factory, worker):
    customer = factory.customer("carol@example.com")
    invoice = make_invoice(session, customer.id, 1500)
    session.query(SettlementRequest).delete()
    session.commit()
    html = admin_client.get("/admin/customers?q=carol").get_data(as_text=True)
    assert "carol@example.com" in html
    page = admin_client.get(f"/admin/customers/{customer.id}").get_data(as_text=True)
    token = get_csrf(admin_client, f"/admin/customers/{customer.id}")
    assert 'id="adjust-form"' in page

    refused = admin_client.post(f"/admin/customers/{customer.id}/adjust",
                                data={"csrf_token": token, "amount": "15.00", "reason": ""})
    assert refused.status_code == 400
    assert session.scalar(select(LedgerEntry)) is None

    response = admin_client.post(f"/admin/customers/{customer.id}/adjust",
                                 data={"csrf_token": token, "amount": "20.00", "reason": "goodwill", "request_key": "k1"})
    assert response.status_code == 303
    admin_client.post(f"/admin/customers/{customer.id}/adjust",
                      data={"csrf_token": token, "amount": "20.00", "reason": "goodwill", "request_key": "k1"})
    audit = session.scalar(select(AuditLog).where(AuditLog.action == "customer.adjust_cash"))
    assert audit.after["reason"] == "goodwill" and audit.after["amount_cents"] == 2000

    worker.run_burst()
    session.expire_all()
    assert session.get(Invoice, invoice.id).state == "paid"
    assert session.get(User, customer.id).cash_balance_cents == 500
    assert_money_invariants(session, customer.id)

    debit = admin_client.post(f"/admin/customers/{customer.id}/adjust",
                              data={"csrf_token": token, "amount": "-6.00", "reason": "too much", "request_key": "k2"})
    assert debit.status_code == 409
    session.expire_all()
    assert session.get(User, customer.id).cash_balance_cents == 500
