"""The customer's activity (SPEC §15) through HTTP: every money movement and card attempt, by month,
paginated, exported as CSV with formula cells neutralised; cards named "Visa ending 4242" with the
Stripe reference beside, on the activity, the invoice page and the admin invoice page."""

import csv
import io
from datetime import UTC, datetime

import pytest
import time_machine

from app.billing.adjustments import adjust_cash_balance
from app.billing.invoices import apply_payment, lock_invoice, pay_from_balance, record_bank_transfer
from app.billing.ledger import post_entry
from app.billing.topups import credit_topup
from app.billing.vouchers import create_voucher_batch, redeem_voucher
from app.models import ChargeAttempt
from app.models.stripe_events import CardTopup
from tests.conftest import get_csrf, login
from tests.integration.usage_helpers import add_card
from tests.money_support import make_invoice

pytestmark = pytest.mark.integration

OCT = datetime(2026, 10, 15, 12, 0, tzinfo=UTC)
NOV = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)


def _at(moment):
    return time_machine.travel(moment, tick=False)


def _attempt(session, customer, invoice, card, status, amount, pi, error=None, n=1):
    attempt = ChargeAttempt(invoice_id=invoice.id, customer_id=customer.id, card_id=card.id, attempt_no=n,
                            idempotency_key=f"test-attempt-{invoice.id}-{n}", amount_cents=amount, status=status,
                            payment_intent_id=pi, error_message=error)
    session.add(attempt)
    session.flush()
    return attempt


@pytest.fixture
def history(session, factory):
    """A customer whose October and November hold one of every kind of movement."""
    customer = factory.customer("history@example.com")
    admin = factory.admin()
    visa = add_card(session, customer)
    with _at(OCT):
        credit_topup(session, customer.id, payment_intent_id="pi_topup_oct", amount_cents=2_000)
        session.commit()
        created = create_voucher_batch(session, actor_id=admin.id, count=1, value_cents=1_000, max_redemptions=1,
                                       expires_at=None, note=None, request_key="vb-1")
        redeem_voucher(session, customer_id=customer.id, code=created.codes[0][1])
        cash_paid = make_invoice(session, customer.id, 1_500)
        pay_from_balance(session, lock_invoice(session, cash_paid.id), "cash", 1_500)
        session.commit()
        adjust_cash_balance(session, actor_id=admin.id, customer_id=customer.id, amount_cents=500,
                            reason="=HYPERLINK(\"http://evil\") goodwill for the outage", request_key="adj-1")
    with _at(NOV):
        card_paid = make_invoice(session, customer.id, 4_000)
        _attempt(session, customer, card_paid, visa, "declined", 4_000, "pi_declined_1",
                 error="Your card has insufficient funds.", n=1)
        succeeded = _attempt(session, customer, card_paid, visa, "succeeded", 4_000, "pi_card_paid", n=2)
        apply_payment(session, lock_invoice(session, card_paid.id), source="card", amount_cents=4_000,
                      charge_attempt_id=succeeded.id, payment_intent_id="pi_card_paid", reference=card_paid.number)
        session.add(CardTopup(customer_id=customer.id, card_id=visa.id, amount_cents=2_500, currency="usd",
                              idempotency_key="card-topup-1", status="declined", payment_intent_id="pi_topup_declined",
                              error_message="insufficient funds"))
        session.commit()
        transfer_paid = make_invoice(session, customer.id, 700)
        record_bank_transfer(session, transfer_paid.id, reference="BANK-REF-77")
        post_entry(session, customer_id=customer.id, account="cash", amount_cents=-300, kind="refund",
                   idempotency_key="refund-1", reference="pi_topup_oct", note="Unused balance refunded")
        # what app.billing.credit_notes writes when a credit note returns a voucher payment
        post_entry(session, customer_id=customer.id, account="voucher", amount_cents=200, kind="credit_note",
                   idempotency_key="credit-note:1:voucher", reference="CN-2026-000001",
                   note=f"Credit note CN-2026-000001 for invoice {cash_paid.number}")
        session.commit()
    return {"customer": customer, "visa": visa, "card_paid": card_paid, "cash_paid": cash_paid,
            "transfer_paid": transfer_paid}


def _rows(html: str) -> int:
    return html.count('class="activity-row')


def test_activity_requires_login(client):
    assert client.get("/activity").status_code == 302
    assert client.get("/activity.csv").status_code == 302


def test_activity_lists_every_movement_and_card_attempt_with_card_names(app, client, history):
    login(client, history["customer"].email)
    response = client.get("/activity")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert _rows(html) == 10
    for text in (
        "Top-up", "+$20.00", "pi_topup_oct",
        "Voucher redeemed", "Voucher balance", "+$10.00",
        f"Paid invoice {history['cash_paid'].number} from your cash balance", "-$15.00",
        "Credit by Paydesk: =HYPERLINK", "goodwill for the outage", "+$5.00",
        f"Card declined for invoice {history['card_paid'].number}: Your card has insufficient funds.",
        f"Paid invoice {history['card_paid'].number} by card", "Visa ending 4242", "pi_card_paid", "-$40.00",
        "Card top-up declined: insufficient funds", "pi_topup_declined", "$25.00",
        f"Paid invoice {history['transfer_paid'].number} by bank transfer", "BANK-REF-77", "-$7.00",
        "Refund to your card: Unused balance refunded", "-$3.00",
        f"Credit note CN-2026-000001 for invoice {history['cash_paid'].number}: credited to your voucher balance",
        "+$2.00",
    ):
        assert text in html, text
    # newest first: the refund (November, last) before the top-up (October, first)
    assert html.index("Refund to your card") < html.index('<span class="activity-description">Top-up</span>')
    assert 'id="nav-customer-activity"' in html


def test_activity_filters_by_month_and_refuses_a_bad_month_without_a_5xx(app, client, history):
    login(client, history["customer"].email)
    october = client.get("/activity?month=2026-10").get_data(as_text=True)
    assert _rows(october) == 4 and "pi_topup_oct" in october and "Visa ending 4242" not in october
    november = client.get("/activity?month=2026-11").get_data(as_text=True)
    assert _rows(november) == 6 and "Visa ending 4242" in november and "Voucher redeemed" not in november
    assert _rows(client.get("/activity?month=2026-09").get_data(as_text=True)) == 0
    for bad in ("2026-13", "9999-12", "2026-1", "<script>", "x" * 5000):
        response = client.get("/activity", query_string={"month": bad})
        assert response.status_code == 400
        assert "Choose a month like 2026-11." in response.get_data(as_text=True)
        assert client.get("/activity.csv", query_string={"month": bad}).status_code == 400


def test_activity_is_paginated_newest_first(app, session, factory, client):
    customer = factory.customer()
    for n in range(120):
        with _at(datetime(2026, 11, 1, tzinfo=UTC).replace(minute=n % 60, hour=n // 60)):
            post_entry(session, customer_id=customer.id, account="cash", amount_cents=100 + n, kind="topup",
                       idempotency_key=f"topup:pi_{n}", reference=f"pi_page_{n:03d}")
            session.commit()
    login(client, customer.email)
    first = client.get("/activity").get_data(as_text=True)
    assert _rows(first) == 50 and "pi_page_119" in first and "pi_page_070" in first and "pi_page_069" not in first
    assert "Page 1 of 3" in first and 'id="activity-prev"' not in first
    third = client.get("/activity?page=3").get_data(as_text=True)
    assert _rows(third) == 20 and "pi_page_019" in third and "pi_page_000" in third and 'id="activity-next"' not in third
    beyond = client.get("/activity?page=999999999999").get_data(as_text=True)
    assert "Page 3 of 3" in beyond
    fragment = client.get("/activity?page=2&month=2026-11", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert fragment.lstrip().startswith('<section id="activity-list">') and _rows(fragment) == 50
    assert "pi_page_069" in fragment and "pi_page_020" in fragment


def test_activity_csv_export_is_neutralised_and_never_cached(app, client, history):
    login(client, history["customer"].email)
    response = client.get("/activity.csv?month=2026-10")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "no-store" in response.headers["Cache-Control"]
    assert 'filename="paydesk-activity-2026-10.csv"' in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 4
    adjustment = next(r for r in rows if "goodwill" in r["description"])
    assert adjustment["description"].startswith("Credit by Paydesk: =HYPERLINK")  # not a cell that starts with =
    assert adjustment["amount"] == "5.00" and adjustment["currency"] == "USD"
    paid = next(r for r in rows if r["invoice"] == history["cash_paid"].number)
    assert paid["amount"] == "-15.00" and paid["account"] == "Cash balance"

    everything = list(csv.DictReader(io.StringIO(client.get("/activity.csv").get_data(as_text=True))))
    assert len(everything) == 10
    declined = next(r for r in everything if r["status"] == "declined" and r["reference"] == "pi_declined_1")
    assert declined["account"] == "Visa ending 4242" and declined["amount"] == "0.00"
    assert declined["attempted_amount"] == "40.00"


def test_a_cell_that_starts_like_a_formula_is_neutralised_in_the_export(app, session, factory, client):
    customer = factory.customer()
    invoice = make_invoice(session, customer.id, 900)
    record_bank_transfer(session, invoice.id, reference="=1+2")
    login(client, customer.email)
    [row] = list(csv.DictReader(io.StringIO(client.get("/activity.csv").get_data(as_text=True))))
    assert row["reference"] == "'=1+2" and row["amount"] == "-9.00"


def test_another_customers_movements_never_show(app, client, factory, history):
    stranger = factory.customer("stranger@example.com")
    login(client, stranger.email)
    html = client.get("/activity").get_data(as_text=True)
    assert _rows(html) == 0 and "pi_topup_oct" not in html
    assert len(list(csv.reader(io.StringIO(client.get("/activity.csv").get_data(as_text=True))))) == 1


def test_invoice_pages_name_the_card_with_the_stripe_reference_beside(app, client, factory, history):
    login(client, history["customer"].email)
    page = client.get(f"/invoices/{history['card_paid'].id}").get_data(as_text=True)
    assert '<span class="payment-source">Visa ending 4242</span>' in page
    assert '<small class="muted payment-reference">pi_card_paid</small>' in page
    transfer = client.get(f"/invoices/{history['transfer_paid'].id}").get_data(as_text=True)
    assert "Bank transfer" in transfer and "BANK-REF-77" in transfer

    admin_client = app.test_client()
    login(admin_client, "root@example.com", "admin-password-1")
    admin_page = admin_client.get(f"/admin/invoices/{history['card_paid'].id}").get_data(as_text=True)
    assert admin_page.count("Visa ending 4242") >= 3  # the payment and both attempts
    assert "pi_declined_1" in admin_page and get_csrf(admin_client, "/admin/")
    customer_page = admin_client.get(f"/admin/customers/{history['customer'].id}").get_data(as_text=True)
    assert '<table id="customer-activity">' in customer_page
    assert customer_page.count("Visa ending 4242") >= 4  # the card list, the payment and both attempts
    assert "goodwill for the outage" in customer_page and "Card top-up declined: insufficient funds" in customer_page
