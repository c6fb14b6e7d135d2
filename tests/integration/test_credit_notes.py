"""Credit notes: worked examples, bounds under concurrency, gapless numbers, immutability, card
refunds through the Stripe emulator (also across a killed worker), void refused."""

import secrets
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import stripe as stripe_sdk
from sqlalchemy import func, select

from app.billing.credit_notes import (
    CreditExceedsInvoice,
    CreditLineInput,
    CreditNoteImmutable,
    InvalidCreditLine,
    InvoiceNotCreditable,
    issue_credit_note,
)
from app.billing.invoices import InvoiceHasCreditNotes, LineSpec, create_invoice, issue_invoice, void_invoice
from app.billing.settlement import settle_customer
from app.models import AuditLog, Card, Invoice, InvoicePayment, LedgerEntry, SettlementRequest, User
from app.models.base import utcnow
from app.models.credit_note import CreditNote, CreditNoteLine
from app.models.stripe_events import CashRefund
from tests.money_support import add_card, assert_money_invariants, credit, make_invoice

pytestmark = pytest.mark.integration


def _key() -> str:
    return secrets.token_urlsafe(12)


def _issue(session, invoice, *inputs, **kwargs):
    kwargs.setdefault("reason", "Goodwill")
    kwargs.setdefault("request_key", _key())
    return issue_credit_note(session, invoice.id, list(inputs), **kwargs)


def _line(invoice, n=0):
    return sorted(invoice.lines, key=lambda line: line.position)[n]


def _refunds_at_stripe(emulator, pi_id):
    sdk = stripe_sdk.StripeClient("sk_test_paydesk", base_addresses={"api": emulator.api_base})
    return sdk.v1.refunds.list(params={"payment_intent": pi_id}).data


def _paid_mixed_invoice(session, factory):
    """An invoice of $12.00 paid by voucher $6 + cash $2 + card $4 through settlement."""
    customer = factory.customer()
    add_card(session, customer.id, default=True)
    credit(session, customer.id, "voucher", 600)
    credit(session, customer.id, "cash", 200)
    invoice = make_invoice(session, customer.id, 1200)
    settle_customer(session, customer.id)
    session.expire_all()
    invoice = session.get(Invoice, invoice.id)
    assert invoice.state == "paid"
    assert sorted((p.source, p.amount_cents) for p in invoice.payments) == [("card", 400), ("cash", 200), ("voucher", 600)]
    return customer, invoice


# ---------------------------------------------------------- worked examples ---
def test_an_open_invoice_of_30_credited_10_has_20_due(session, factory):
    admin = factory.admin()
    customer = factory.customer()
    invoice = make_invoice(session, customer.id, 3000)

    note = _issue(session, invoice, CreditLineInput(_line(invoice).id, amount_cents=1000), actor_id=admin.id,
                  reason="Price set by mistake", memo="ticket 4711")

    session.expire_all()
    invoice = session.get(Invoice, invoice.id)
    assert (invoice.state, invoice.total_cents, invoice.amount_due_cents) == ("open", 3000, 2000)
    assert note.number == f"CN-{note.issued_at.year}-000001"
    assert (note.subtotal_cents, note.tax_cents, note.total_cents, note.applied_to_due_cents) == (1000, 0, 1000, 1000)
    [payment] = invoice.payments
    assert (payment.source, payment.amount_cents, payment.reference) == ("credit_note", 1000, note.number)
    user = session.get(User, customer.id)
    assert (user.cash_balance_cents, user.voucher_balance_cents) == (0, 0)
    audit = session.scalar(select(AuditLog).where(AuditLog.action == "credit_note.issue"))
    assert audit.actor_id == admin.id and audit.target_id == str(note.id)
    assert audit.before["due_cents"] == 3000 and audit.after["invoice_due_cents"] == 2000
    assert audit.after["memo"] == "ticket 4711"
    assert_money_invariants(session, customer.id)


def test_an_open_invoice_credited_in_full_becomes_paid_by_credit_note(session, factory):
    customer = factory.customer()
    invoice = make_invoice(session, customer.id, 1800, 1200)
    _issue(session, invoice, CreditLineInput(_line(invoice, 0).id, amount_cents=1800),
           CreditLineInput(_line(invoice, 1).id, amount_cents=1200))
    session.expire_all()
    invoice = session.get(Invoice, invoice.id)
    assert (invoice.state, invoice.amount_due_cents) == ("paid", 0)
    assert [p.source for p in invoice.payments] == ["credit_note"]
    assert_money_invariants(session, customer.id)


def test_a_paid_invoice_credited_in_full_returns_voucher_cash_and_refunds_the_card_once(
    app, session, factory, quiet_stripe, worker
):
    admin = factory.admin()
    customer, invoice = _paid_mixed_invoice(session, factory)
    card_payment = next(p for p in invoice.payments if p.source == "card")
    key = _key()

    note = _issue(session, invoice, CreditLineInput(_line(invoice).id, amount_cents=1200), card_refund=True,
                  actor_id=admin.id, request_key=key)
    worker.run_burst()  # the refund job enqueued after the commit
    again = _issue(session, invoice, CreditLineInput(_line(invoice).id, amount_cents=1200), card_refund=True,
                   actor_id=admin.id, request_key=key)  # double submit
    worker.run_burst()

    assert again.id == note.id
    session.expire_all()
    assert (note.returned_voucher_cents, note.returned_cash_cents, note.returned_card_cents) == (600, 200, 400)
    user = session.get(User, customer.id)
    assert (user.voucher_balance_cents, user.cash_balance_cents) == (600, 200)
    [part] = session.scalars(select(CashRefund)).all()
    assert (part.status, part.amount_cents, part.credit_note_id) == ("succeeded", 400, note.id)
    assert [r.amount for r in _refunds_at_stripe(quiet_stripe, card_payment.payment_intent_id)] == [400]
    kinds = [(e.account, e.kind, e.amount_cents) for e in session.scalars(
        select(LedgerEntry).where(LedgerEntry.customer_id == customer.id, LedgerEntry.kind.in_(("credit_note", "refund")))
        .order_by(LedgerEntry.id))]
    assert kinds == [("voucher", "credit_note", 600), ("cash", "credit_note", 200), ("cash", "credit_note", 400),
                     ("cash", "refund", -400)]
    assert session.get(Invoice, invoice.id).state == "paid"
    refund_audit = session.scalar(select(AuditLog).where(AuditLog.action == "credit_note.refund_to_card"))
    assert refund_audit.actor_id == admin.id and refund_audit.after["amount_cents"] == 400
    assert session.scalar(select(func.count(CreditNote.id))) == 1
    assert_money_invariants(session, customer.id)


def test_the_card_part_goes_to_the_cash_balance_when_the_admin_chooses_so(session, factory, quiet_stripe):
    customer, invoice = _paid_mixed_invoice(session, factory)
    card_payment = next(p for p in invoice.payments if p.source == "card")
    _issue(session, invoice, CreditLineInput(_line(invoice).id, amount_cents=1200), card_refund=False)
    session.expire_all()
    user = session.get(User, customer.id)
    assert (user.voucher_balance_cents, user.cash_balance_cents) == (600, 600)
    assert session.scalar(select(func.count(CashRefund.id))) == 0
    assert _refunds_at_stripe(quiet_stripe, card_payment.payment_intent_id) == []
    assert_money_invariants(session, customer.id)


def test_a_partial_credit_on_a_paid_invoice_returns_the_last_paid_money_first(session, factory, quiet_stripe):
    customer, invoice = _paid_mixed_invoice(session, factory)
    first = _issue(session, invoice, CreditLineInput(_line(invoice).id, amount_cents=500))
    second = _issue(session, invoice, CreditLineInput(_line(invoice).id, amount_cents=300))
    assert (first.returned_card_cents, first.returned_cash_cents, first.returned_voucher_cents) == (400, 100, 0)
    assert (second.returned_card_cents, second.returned_cash_cents, second.returned_voucher_cents) == (0, 100, 200)
    session.expire_all()
    user = session.get(User, customer.id)
    assert (user.cash_balance_cents, user.voucher_balance_cents) == (600, 200)
    assert_money_invariants(session, customer.id)


def test_credit_on_a_balance_settles_the_other_open_invoices(session, factory, quiet_stripe):
    customer, paid = _paid_mixed_invoice(session, factory)
    for card in session.scalars(select(Card)):
        card.removed_at = utcnow()  # no card: only the credited balance can pay the next invoice
    session.commit()
    other = make_invoice(session, customer.id, 700)
    session.execute(SettlementRequest.__table__.delete())
    session.commit()
    _issue(session, paid, CreditLineInput(_line(paid).id, amount_cents=1200))
    assert session.get(SettlementRequest, customer.id) is not None  # the outbox row, same transaction
    settle_customer(session, customer.id)
    session.expire_all()
    other = session.get(Invoice, other.id)
    assert other.state == "paid"
    assert sorted((p.source, p.amount_cents) for p in other.payments) == [("cash", 100), ("voucher", 600)]
    assert_money_invariants(session, customer.id)


# ------------------------------------------------------------ lines and tax ---
def test_credit_by_hours_uses_the_line_unit_price_and_tax_is_rounded_once_on_the_subtotal(session, factory):
    customer = factory.customer()
    lines = [LineSpec("web-1", 2500, plan_name="vm-small", deployment_id=None, seconds=100 * 3600,
                      hourly_price=Decimal("0.25")),
             LineSpec("db-1", 333)]
    invoice = issue_invoice(session, create_invoice(session, customer.id, lines, tax_rate=Decimal("0.19")).id)
    session.commit()
    assert (invoice.subtotal_cents, invoice.tax_cents, invoice.total_cents) == (2833, 538, 3371)

    note = _issue(session, invoice, CreditLineInput(_line(invoice, 0).id, seconds=10 * 3600),
                  CreditLineInput(_line(invoice, 1).id, amount_cents=111),
                  CreditLineInput(None, amount_cents=7, description="Support call"))
    # 10 h × $0.25 = 250; + 111 + 7 = 368; tax 368 × 0.19 = 69.92 → 70
    assert (note.subtotal_cents, note.tax_cents, note.total_cents) == (368, 70, 438)
    assert [(line.seconds, line.amount_cents) for line in note.lines] == [(36000, 250), (None, 111), (None, 7)]

    with pytest.raises(InvalidCreditLine, match="between 0 and 90.00 hours"):
        _issue(session, invoice, CreditLineInput(_line(invoice, 0).id, seconds=91 * 3600))
    with pytest.raises(InvalidCreditLine, match=r"between 0.01 and \$2.22"):
        _issue(session, invoice, CreditLineInput(_line(invoice, 1).id, amount_cents=223))
    with pytest.raises(InvalidCreditLine, match="not both"):
        _issue(session, invoice, CreditLineInput(_line(invoice, 0).id, amount_cents=1, seconds=3600))
    with pytest.raises(InvalidCreditLine, match="not billed by the hour"):
        _issue(session, invoice, CreditLineInput(_line(invoice, 1).id, seconds=3600))
    with pytest.raises(InvalidCreditLine, match="needs a description"):
        _issue(session, invoice, CreditLineInput(None, amount_cents=5))

    # the rest, in one go: tax is exactly what the invoice's tax has left, so the total matches
    rest = _issue(session, invoice, CreditLineInput(_line(invoice, 0).id, seconds=90 * 3600),
                  CreditLineInput(_line(invoice, 1).id, amount_cents=222 - 7))
    assert note.total_cents + rest.total_cents == invoice.total_cents
    assert note.tax_cents + rest.tax_cents == invoice.tax_cents
    with pytest.raises(CreditExceedsInvoice, match="already credited in full"):
        _issue(session, invoice, CreditLineInput(None, amount_cents=1, description="More"))
    session.expire_all()
    assert session.get(Invoice, invoice.id).state == "paid"
    assert_money_invariants(session, customer.id)


def test_free_lines_cannot_take_the_credit_past_the_invoice_subtotal(session, factory):
    customer = factory.customer()
    invoice = make_invoice(session, customer.id, 1000)
    _issue(session, invoice, CreditLineInput(None, amount_cents=900, description="Outage"))
    with pytest.raises(CreditExceedsInvoice, match=r"At most \$1.00"):
        _issue(session, invoice, CreditLineInput(None, amount_cents=101, description="Outage again"))
    session.expire_all()
    assert session.get(Invoice, invoice.id).amount_due_cents == 100
    assert session.scalar(select(func.count(CreditNote.id))) == 1


def test_draft_and_void_invoices_cannot_be_credited(session, factory):
    customer = factory.customer()
    draft = make_invoice(session, customer.id, 1000, issue=False)
    voided = make_invoice(session, customer.id, 1000)
    void_invoice(session, voided.id)
    for invoice in (draft, voided):
        with pytest.raises(InvoiceNotCreditable):
            _issue(session, invoice, CreditLineInput(None, amount_cents=100, description="x"))
    assert session.scalar(select(func.count(CreditNote.id))) == 0


# ------------------------------------------------------------ immutability ---
def test_an_issued_credit_note_cannot_be_changed_or_deleted(session, factory):
    customer = factory.customer()
    invoice = make_invoice(session, customer.id, 1000)
    note = _issue(session, invoice, CreditLineInput(None, amount_cents=100, description="x"))
    note.total_cents = 1
    with pytest.raises(CreditNoteImmutable):
        session.flush()
    session.rollback()
    session.get(CreditNoteLine, note.lines[0].id).amount_cents = 5
    with pytest.raises(CreditNoteImmutable):
        session.flush()
    session.rollback()
    session.delete(session.get(CreditNote, note.id))
    with pytest.raises(CreditNoteImmutable):
        session.flush()
    session.rollback()
    session.add(CreditNoteLine(credit_note_id=note.id, description="sneaky", amount_cents=5))
    with pytest.raises(CreditNoteImmutable):
        session.flush()
    session.rollback()


def test_voiding_an_invoice_with_credit_notes_is_refused_with_the_reason(session, factory):
    customer = factory.customer()
    invoice = make_invoice(session, customer.id, 1000)
    note = _issue(session, invoice, CreditLineInput(None, amount_cents=100, description="x"))
    with pytest.raises(InvoiceHasCreditNotes, match=note.number):
        void_invoice(session, invoice.id)
    session.expire_all()
    assert session.get(Invoice, invoice.id).state == "open"


# ------------------------------------------------------------- concurrency ---
def test_twenty_concurrent_credit_notes_never_exceed_the_total_and_numbers_stay_gapless(app, session, factory):
    from app.extensions import db

    customer = factory.customer()
    invoice = make_invoice(session, customer.id, 3000)
    other = make_invoice(session, customer.id, 5000)  # an unrelated invoice, credited at the same time
    line_id, other_line_id = _line(invoice).id, _line(other).id
    now = datetime(2032, 5, 1, tzinfo=UTC)
    barrier = threading.Barrier(20)
    outcomes, errors = [], []

    def attempt(n):
        with app.app_context():
            s = db.new_session()
            try:
                barrier.wait()
                target, line = (invoice.id, line_id) if n % 4 else (other.id, other_line_id)
                # half on the invoice line, half as free lines: both bounds are checked under the lock
                spec = CreditLineInput(line, amount_cents=700) if n % 2 else CreditLineInput(None, 700, None, "race")
                note = issue_credit_note(s, target, [spec], reason="race", request_key=f"race-{n}", now=now)
                outcomes.append((target, note.number))
            except (CreditExceedsInvoice, InvalidCreditLine):
                outcomes.append((None, None))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                s.close()

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    session.expire_all()
    credited = session.scalar(select(func.sum(CreditNote.total_cents)).where(CreditNote.invoice_id == invoice.id))
    assert credited == 2800  # 4 × 7.00; a fifth would exceed 30.00
    assert session.get(Invoice, invoice.id).amount_due_cents == 200
    assert session.scalar(select(func.count(CreditNote.id)).where(CreditNote.invoice_id == other.id)) == 5
    numbers = sorted(session.scalars(select(CreditNote.number)))
    assert numbers == [f"CN-2032-{n:06d}" for n in range(1, 10)]
    assert sum(1 for target, _ in outcomes if target is None) == 11
    assert_money_invariants(session, customer.id)


# ---------------------------------------------------------- a killed worker ---
def test_a_worker_killed_between_the_ledger_entry_and_the_stripe_refund_refunds_once_after_reconciliation(
    app, session, factory, quiet_stripe, worker
):
    from jobs.queue import enqueue
    from jobs.stripe_events import reconcile_stripe_events

    customer, invoice = _paid_mixed_invoice(session, factory)
    card_payment = next(p for p in invoice.payments if p.source == "card")
    quiet_stripe.set_fault("/v1/refunds", "timeout", delay=20)  # the refund call hangs, never reaching Stripe
    proc = worker.start()
    note = _issue(session, invoice, CreditLineInput(_line(invoice).id, amount_cents=1200), card_refund=True)

    # the ledger entry and the pending refund row are committed with the credit note …
    session.expire_all()
    [part] = session.scalars(select(CashRefund)).all()
    assert part.status == "pending" and part.credit_note_id == note.id
    assert session.scalar(select(LedgerEntry).where(LedgerEntry.idempotency_key == part.idempotency_key)) is not None
    # … and the worker is inside the Stripe call when it is killed
    deadline = time.monotonic() + 30
    while _injected_faults(quiet_stripe):  # the fault is consumed when the worker's call arrives
        assert time.monotonic() < deadline, "the worker never called Stripe"
        time.sleep(0.1)
    worker.kill(proc)
    quiet_stripe.clear_faults()
    session.expire_all()
    assert session.get(CashRefund, part.id).status == "pending"
    assert _refunds_at_stripe(quiet_stripe, card_payment.payment_intent_id) == []

    for _ in range(2):  # reconciliation, twice: the second finds nothing pending
        assert enqueue(reconcile_stripe_events)
        worker.run_burst()
    session.expire_all()
    part = session.get(CashRefund, part.id)
    assert part.status == "succeeded"
    assert [r.amount for r in _refunds_at_stripe(quiet_stripe, card_payment.payment_intent_id)] == [400]
    user = session.get(User, customer.id)
    assert (user.voucher_balance_cents, user.cash_balance_cents) == (600, 200)
    assert_money_invariants(session, customer.id)


def _injected_faults(emulator) -> list:
    import json

    return json.loads(emulator._call("GET", "/_emulator/faults"))["faults"]


def test_the_customer_is_mailed_the_credit_note_with_its_pdf_once(app, session, factory, worker, mailbox):
    import io

    from pypdf import PdfReader

    customer = factory.customer(email="mailme@example.com")
    invoice = make_invoice(session, customer.id, 3000)
    note = _issue(session, invoice, CreditLineInput(_line(invoice).id, amount_cents=1000), reason="Price fixed")
    worker.run_burst()
    worker.run_burst()
    messages = [m for m in mailbox.wait_for(1) if note.number in m["Subject"]]
    assert len(messages) == 1 and messages[0]["To"] == "mailme@example.com"
    body = messages[0].get_body(preferencelist=("plain",)).get_content()
    assert "Price fixed" in body and "$10.00" in body and invoice.number in body
    [attachment] = [part for part in messages[0].iter_attachments() if part.get_content_type() == "application/pdf"]
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(attachment.get_content())).pages)
    assert note.number in text and invoice.number in text


def test_a_card_refund_stripe_refuses_lands_on_the_cash_balance_and_requests_settlement(session, factory, quiet_stripe):
    from app.billing.refunds import send_pending_refunds

    customer, invoice = _paid_mixed_invoice(session, factory)
    card_payment = next(p for p in invoice.payments if p.source == "card")
    session.execute(InvoicePayment.__table__.update().where(InvoicePayment.id == card_payment.id)
                    .values(payment_intent_id="pi_does_not_exist"))  # Stripe will refuse the refund
    session.commit()
    session.expire_all()
    note = _issue(session, session.get(Invoice, invoice.id), CreditLineInput(_line(invoice).id, amount_cents=400),
                  card_refund=True)
    session.execute(SettlementRequest.__table__.delete())
    session.commit()
    [part] = send_pending_refunds(session, request_key=f"credit-note:{note.id}")
    session.expire_all()
    assert session.get(CashRefund, part.id).status == "failed"
    user = session.get(User, customer.id)
    assert (user.cash_balance_cents, user.voucher_balance_cents) == (400, 0)
    assert session.get(SettlementRequest, customer.id) is not None
    send_pending_refunds(session)  # nothing pending: nothing more moves
    session.expire_all()
    assert session.get(User, customer.id).cash_balance_cents == 400
    assert_money_invariants(session, customer.id)
