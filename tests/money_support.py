"""Test data for the money core: invoices through create_invoice + issue_invoice, funds through the
ledger, cards created for real at the Stripe emulator, and invariant checks."""

import secrets
from datetime import datetime

from sqlalchemy import func, select

from app.billing.invoices import LineSpec, create_invoice, issue_invoice
from app.billing.ledger import ledger_balance, post_entry
from app.models import BillingCustomer, Card, Invoice, InvoicePayment, User


def make_invoice(session, customer_id: int, *amounts_cents: int, now: datetime | None = None,
                 issue: bool = True, commit: bool = True) -> Invoice:
    """An invoice with one line per amount (no tax), issued (open) unless issue=False."""
    lines = [LineSpec(description=f"Line {n + 1}", amount_cents=a) for n, a in enumerate(amounts_cents)]
    invoice = create_invoice(session, customer_id, lines, tax_rate=0)
    if issue:
        invoice = issue_invoice(session, invoice.id, now=now)
    if commit:
        session.commit()
    return invoice


def credit(session, customer_id: int, account: str, amount_cents: int, *, commit: bool = True) -> None:
    post_entry(session, customer_id=customer_id, account=account, amount_cents=amount_cents,
               kind="test_credit", idempotency_key=f"test-credit-{secrets.token_hex(8)}")
    if commit:
        session.commit()


def add_card(session, customer_id: int, number: str = "4242424242424242", *, default: bool = False,
             created_at: datetime | None = None) -> Card:
    """A real Stripe customer + PaymentMethod at the emulator, attached, then recorded as a Card."""
    from app.payments.gateway import stripe_client

    client = stripe_client()
    billing = session.get(BillingCustomer, customer_id)
    if billing is None:
        user = session.get(User, customer_id)
        stripe_customer = client.v1.customers.create(params={"email": user.email})
        billing = BillingCustomer(customer_id=customer_id, stripe_customer_id=stripe_customer.id)
        session.add(billing)
        session.flush()
    pm = client.v1.payment_methods.create(
        params={"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}
    )
    client.v1.payment_methods.attach(pm.id, params={"customer": billing.stripe_customer_id})
    if default:
        for other in session.scalars(select(Card).where(Card.customer_id == customer_id)):
            other.is_default = False
    card = Card(
        customer_id=customer_id, stripe_payment_method_id=pm.id,
        fingerprint=(pm.card.fingerprint if pm.card and getattr(pm.card, "fingerprint", None) else pm.id),
        brand=pm.card.brand if pm.card else "visa", last4=number[-4:], exp_month=12, exp_year=2034,
        is_default=default,
    )
    if created_at is not None:
        card.created_at = created_at
    session.add(card)
    session.commit()
    return card


def payment_intents(customer_stripe_id: str | None = None) -> list:
    from app.payments.gateway import stripe_client

    intents = stripe_client().v1.payment_intents.list(params={"limit": 100}).data
    return [pi for pi in intents if customer_stripe_id is None or pi.customer == customer_stripe_id]


def assert_money_invariants(session, customer_id: int) -> None:
    """Ledger == cached balances, nothing negative, paid == sum of payments, paid iff fully paid."""
    session.expire_all()
    user = session.get(User, customer_id)
    assert user.cash_balance_cents == ledger_balance(session, customer_id, "cash") >= 0
    assert user.voucher_balance_cents == ledger_balance(session, customer_id, "voucher") >= 0
    for invoice in session.scalars(select(Invoice).where(Invoice.customer_id == customer_id)):
        paid = session.scalar(
            select(func.coalesce(func.sum(InvoicePayment.amount_cents), 0)).where(InvoicePayment.invoice_id == invoice.id)
        )
        assert invoice.paid_cents == paid, invoice.number
        assert 0 <= invoice.paid_cents <= invoice.total_cents
        if invoice.state == "paid":
            assert invoice.paid_cents == invoice.total_cents
        if invoice.state == "open":
            assert invoice.paid_cents < invoice.total_cents
