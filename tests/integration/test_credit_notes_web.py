"""Credit-note pages: the admin form with its preview (which writes nothing), hostile input,
the customer's view and PDF (ownership), the admin list and CSV, void refused."""

import csv
import io
import re
from decimal import Decimal
from html import unescape

import pytest
from pypdf import PdfReader
from sqlalchemy import func, select

from app.billing.credit_notes import CreditLineInput, issue_credit_note
from app.billing.invoices import LineSpec, create_invoice, issue_invoice
from app.models import AuditLog, Invoice, InvoicePayment, LedgerEntry
from app.models.credit_note import CreditNote
from tests.conftest import csrf_token_from, login
from tests.money_support import assert_money_invariants, make_invoice

pytestmark = pytest.mark.integration


@pytest.fixture
def admin_client(app, factory, session):
    factory.admin()
    session.commit()
    client = app.test_client()
    login(client, "root@example.com", "admin-password-1")
    return client


def _taxed_invoice(session, customer_id):
    lines = [LineSpec("web-1", 2500, plan_name="vm-small", seconds=100 * 3600, hourly_price=Decimal("0.25")),
             LineSpec("Support", 500)]
    invoice = issue_invoice(session, create_invoice(session, customer_id, lines, tax_rate=Decimal("0.19")).id)
    session.commit()
    return invoice


def _form(admin_client, invoice, **fields):
    html = admin_client.get(f"/admin/invoices/{invoice.id}").get_data(as_text=True)
    key = re.search(r'name="request_key" type="hidden" value="([^"]+)"', html).group(1)
    return {"csrf_token": csrf_token_from(html), "request_key": key, "credit_reason": "Goodwill", **fields}


def _counts(session):
    session.expire_all()
    return (session.scalar(select(func.count(CreditNote.id))), session.scalar(select(func.count(LedgerEntry.id))),
            session.scalar(select(func.count(InvoicePayment.id))), session.scalar(select(func.count(AuditLog.id))))


def test_the_preview_computes_totals_and_tax_and_writes_nothing(admin_client, session, factory):
    customer = factory.customer()
    invoice = _taxed_invoice(session, customer.id)
    web, support = sorted(invoice.lines, key=lambda line: line.position)
    before = _counts(session)
    data = _form(admin_client, invoice, **{f"line-{web.id}-hours": "10", f"line-{support.id}-amount": "1.00"})
    response = admin_client.post(f"/admin/invoices/{invoice.id}/credit-notes/preview", data=data,
                                 headers={"HX-Request": "true"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200, html
    # 10 h × $0.25 + $1.00 = $3.50; tax 19 % = 0.665 → $0.66 (half-even); total $4.16
    assert 'id="preview-subtotal">$3.50' in html and 'id="preview-tax">$0.66' in html
    assert 'id="preview-total">$4.16' in html and 'id="preview-due">$4.16' in html
    assert _counts(session) == before


@pytest.mark.parametrize("amount", ["abc", "-5", "1e999", "NaN", "0.001", "9" * 40, "99999999999999", "100.00"])
def test_hostile_amounts_get_a_message_and_write_nothing(admin_client, session, factory, amount):
    customer = factory.customer()
    invoice = make_invoice(session, customer.id, 3000)
    [line] = invoice.lines
    before = _counts(session)
    data = _form(admin_client, invoice, **{f"line-{line.id}-amount": amount})
    preview = admin_client.post(f"/admin/invoices/{invoice.id}/credit-notes/preview", data=data)
    issued = admin_client.post(f"/admin/invoices/{invoice.id}/credit-notes", data=data)
    assert preview.status_code == 422 and issued.status_code in (400, 409)
    assert 'class="field-error"' in issued.get_data(as_text=True)
    assert _counts(session) == before


@pytest.mark.parametrize("hours", ["-1", "x", "1e9", "0", "0.0000001", "101"])
def test_hostile_hours_get_a_message_and_write_nothing(admin_client, session, factory, hours):
    customer = factory.customer()
    invoice = _taxed_invoice(session, customer.id)
    web = sorted(invoice.lines, key=lambda line: line.position)[0]
    before = _counts(session)
    data = _form(admin_client, invoice, **{f"line-{web.id}-hours": hours})
    issued = admin_client.post(f"/admin/invoices/{invoice.id}/credit-notes", data=data)
    assert issued.status_code in (400, 409)
    assert _counts(session) == before


def test_a_foreign_line_id_and_a_missing_reason_are_refused(admin_client, session, factory):
    customer = factory.customer()
    invoice = make_invoice(session, customer.id, 3000)
    other = make_invoice(session, customer.id, 3000)
    before = _counts(session)
    foreign = _form(admin_client, invoice, **{f"line-{other.lines[0].id}-amount": "5.00"})
    assert admin_client.post(f"/admin/invoices/{invoice.id}/credit-notes", data=foreign).status_code == 400
    no_reason = _form(admin_client, invoice, credit_reason="  ", **{f"line-{invoice.lines[0].id}-amount": "5.00"})
    response = admin_client.post(f"/admin/invoices/{invoice.id}/credit-notes", data=no_reason)
    assert response.status_code == 409 and "Give the reason" in response.get_data(as_text=True)
    assert _counts(session) == before


def test_admin_issues_a_credit_note_and_a_double_submit_issues_nothing_more(admin_client, session, factory):
    customer = factory.customer()
    invoice = make_invoice(session, customer.id, 3000)
    data = _form(admin_client, invoice, credit_memo="ticket 12", **{f"line-{invoice.lines[0].id}-amount": "10.00"})
    first = admin_client.post(f"/admin/invoices/{invoice.id}/credit-notes", data=data)
    again = admin_client.post(f"/admin/invoices/{invoice.id}/credit-notes", data=data)
    assert first.status_code == 303 and again.status_code == 303
    page = admin_client.get(f"/admin/invoices/{invoice.id}").get_data(as_text=True)
    assert 'id="invoice-due">$20.00' in page and "ticket 12" in page
    session.expire_all()
    [note] = session.scalars(select(CreditNote)).all()
    assert (note.total_cents, note.memo) == (1000, "ticket 12")
    assert session.get(Invoice, invoice.id).amount_due_cents == 2000
    assert_money_invariants(session, customer.id)


def test_the_invoice_page_prefills_the_form_from_the_query(admin_client, session, factory):
    customer = factory.customer()
    invoice = _taxed_invoice(session, customer.id)
    web = sorted(invoice.lines, key=lambda line: line.position)[0]
    html = admin_client.get(f"/admin/invoices/{invoice.id}?line-{web.id}-hours=2.5&credit_reason=Usage+correction").get_data(
        as_text=True)
    assert 'value="2.5"' in html and "Usage correction</textarea>" in html


def test_customer_sees_the_credit_note_and_downloads_its_pdf_others_get_404(app, admin_client, session, factory):
    customer = factory.customer(email="payer@example.com", name="Ada Payer")
    intruder = factory.customer(email="intruder@example.com")
    invoice = _taxed_invoice(session, customer.id)
    note = issue_credit_note(session, invoice.id, [CreditLineInput(None, 500, None, "Outage on 3 October")],
                             reason="Sorry for the outage", memo="internal only", request_key="k1")

    client = app.test_client()
    login(client, customer.email)
    page = client.get(f"/invoices/{invoice.id}").get_data(as_text=True)
    assert note.number in page and "Sorry for the outage" in page and "internal only" not in page
    response = client.get(f"/credit-notes/{note.id}/pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(response.data)).pages)
    assert note.number in text and invoice.number in text and "Sorry for the outage" in text
    assert "Ada Payer" in text and "internal only" not in text

    other = app.test_client()
    login(other, intruder.email)
    assert other.get(f"/credit-notes/{note.id}/pdf").status_code == 404
    assert app.test_client().get(f"/credit-notes/{note.id}/pdf").status_code in (302, 401)
    assert client.get(f"/admin/credit-notes/{note.id}/pdf").status_code == 403
    assert client.post(f"/admin/invoices/{invoice.id}/credit-notes/preview", data={}).status_code in (400, 403)
    assert admin_client.get(f"/admin/credit-notes/{note.id}/pdf").status_code == 200


def test_admin_lists_filters_and_exports_credit_notes(admin_client, session, factory):
    alice = factory.customer("alice@example.com")
    bob = factory.customer("bob@example.com")
    a = make_invoice(session, alice.id, 1000)
    b = make_invoice(session, bob.id, 2000)
    na = issue_credit_note(session, a.id, [CreditLineInput(a.lines[0].id, 300)], reason="=HYPERLINK(\"x\")",
                           request_key="ka")
    nb = issue_credit_note(session, b.id, [CreditLineInput(b.lines[0].id, 700)], reason="Bob", request_key="kb")
    html = admin_client.get("/admin/invoices?customer=alice").get_data(as_text=True)
    assert na.number in html and nb.number not in html
    response = admin_client.get("/admin/credit-notes.csv?customer=alice")
    assert response.headers["Cache-Control"] == "no-store"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [(r["number"], r["invoice"], r["total"], r["applied_to_due"]) for r in rows] == [
        (na.number, a.number, "3.00", "3.00")]
    assert not rows[0]["reason"].startswith("=")
    everything = admin_client.get("/admin/credit-notes.csv").get_data(as_text=True)
    assert na.number in everything and nb.number in everything


def test_voiding_an_invoice_with_a_credit_note_is_refused_on_the_page(admin_client, session, factory):
    customer = factory.customer()
    invoice = make_invoice(session, customer.id, 1000)
    note = issue_credit_note(session, invoice.id, [CreditLineInput(invoice.lines[0].id, 100)], reason="x",
                             request_key="kv")
    html = admin_client.get(f"/admin/invoices/{invoice.id}").get_data(as_text=True)
    response = admin_client.post(f"/admin/invoices/{invoice.id}/void",
                                 data={"csrf_token": csrf_token_from(html), "reason": "wrong"})
    assert response.status_code == 409
    assert note.number in response.get_data(as_text=True) and "cannot be voided" in response.get_data(as_text=True)
    session.expire_all()
    assert session.get(Invoice, invoice.id).state == "open"


def test_credit_notes_appear_in_the_customer_activity(app, session, factory, quiet_stripe):
    from app.billing.settlement import settle_customer
    from tests.money_support import add_card, credit

    customer = factory.customer()
    add_card(session, customer.id, default=True)
    credit(session, customer.id, "voucher", 600)
    credit(session, customer.id, "cash", 200)
    paid = make_invoice(session, customer.id, 1200)
    settle_customer(session, customer.id)
    open_invoice = make_invoice(session, customer.id, 3000)
    session.expire_all()
    assert session.get(Invoice, paid.id).state == "paid"
    full = issue_credit_note(session, paid.id, [CreditLineInput(paid.lines[0].id, 1200)], reason="Refund",
                             card_refund=True, request_key="ka1")
    partial = issue_credit_note(session, open_invoice.id, [CreditLineInput(open_invoice.lines[0].id, 1000)],
                                reason="Goodwill", request_key="ka2")
    client = app.test_client()
    login(client, customer.email)
    html = unescape(client.get("/activity").get_data(as_text=True))
    assert f"Credit note {partial.number} lowered what invoice {open_invoice.number} owes" in html
    assert f"Credit note {full.number} for invoice {paid.number}: credited to your voucher balance" in html
    assert f"Credit note {full.number} for invoice {paid.number}: credited to your cash balance" in html
    assert f"Refund to your card: credit note {full.number}" in html
