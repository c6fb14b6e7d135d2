"""Voucher runway (SPEC §10): a customer without a usable card whose balance will not cover their
running deployments is told the date it runs out and when deletion would follow."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from app.billing.ledger import post_entry
from app.models import Card
from app.models.dunning import DunningNotice
from jobs.dunning import run_dunning
from tests.conftest import login
from tests.integration.dunning_helpers import at, plain_text, queued_jobs, run_deployment, travel

pytestmark = pytest.mark.integration

NOW = at("2027-02-10T12:00:00")


def _voucher_customer(session, factory, email, voucher_cents=500):
    customer = factory.customer(email=email)
    post_entry(session, customer_id=customer.id, account="voucher", amount_cents=voucher_cents,
               kind="voucher_redemption", idempotency_key=f"test-voucher-{customer.id}")
    session.commit()
    # 0.10 per hour, running for 10 hours already: 1.00 used but not invoiced yet
    run_deployment(session, customer, f"{customer.id}-vm", NOW - timedelta(hours=10))
    return customer


def _runway_mail(mailbox, email):
    return [m for m in mailbox.messages if m["To"] == email and "runs out" in m["Subject"]]


def test_voucher_only_customer_is_told_when_the_balance_runs_out_and_when_deletion_would_follow(
    app, session, factory, worker, mailbox, client
):
    customer = _voucher_customer(session, factory, "vouchers@example.com")
    with_card = _voucher_customer(session, factory, "card@example.com")
    session.add(Card(customer_id=with_card.id, stripe_payment_method_id="pm_runway", fingerprint="fp_runway",
                     brand="visa", last4="4242", exp_month=12, exp_year=2099, is_default=True))
    session.commit()

    with travel(NOW):
        run_dunning()
    worker.run_burst()

    # 5.00 of vouchers - 1.00 already used = 4.00 left at 0.10/h: 40 hours → 2027-02-12 04:00 UTC.
    # That usage is invoiced on 2027-03-01; unpaid, deletion follows 92 days later: 2027-06-01.
    messages = _runway_mail(mailbox, customer.email)
    assert len(messages) == 1
    assert messages[0]["Subject"] == "Your balance runs out on 2027-02-12"
    text = plain_text(messages[0])
    assert "runs out on 2027-02-12 (around 04:00 UTC)" in text
    assert "marked for deletion on 2027-06-01" in text
    assert _runway_mail(mailbox, with_card.email) == []
    notice = session.scalar(select(DunningNotice).where(DunningNotice.customer_id == customer.id))
    assert (notice.kind, notice.status, notice.details["runs_out_at"]) == (
        "runway_warning", "sent", "2027-02-12T04:00:00+00:00")

    # Not again the next day (same date), and the dashboard shows the same date.
    with travel(NOW + timedelta(days=1)):
        run_dunning()
        if queued_jobs(app):
            worker.run_burst()
        login(client, customer.email)
        page = client.get("/dashboard").get_data(as_text=True)
    assert len(_runway_mail(mailbox, customer.email)) == 1
    assert ("Your balance covers your deployments until 12 February, 04:00 UTC; without a card or a top-up, the "
            "invoices stay unpaid and your deployments would be deleted on 1 June.") in page


def test_a_balance_that_covers_the_month_gets_no_runway_warning(app, session, factory):
    customer = _voucher_customer(session, factory, "rich@example.com", voucher_cents=100_000)
    with travel(NOW):
        run = run_dunning()
    assert run.notice_ids == []
    assert session.scalars(select(DunningNotice).where(DunningNotice.customer_id == customer.id)).all() == []


def test_runway_counts_tax_and_cash_and_ignores_customers_with_a_usable_card(app, session, factory):
    from app.billing.dunning import voucher_runway

    customer = _voucher_customer(session, factory, "taxed@example.com")
    post_entry(session, customer_id=customer.id, account="cash", amount_cents=100, kind="topup",
               idempotency_key=f"test-cash-{customer.id}")
    session.commit()
    saved = app.config["VAT_RATE"]
    app.config["VAT_RATE"] = "0.25"
    try:
        runway = voucher_runway(session, customer.id, NOW)
    finally:
        app.config["VAT_RATE"] = saved
    # 5.00 vouchers + 1.00 cash - 1.25 used (1.00 + 25 % VAT) = 4.75 at 0.125/h (VAT incl.): 38 hours.
    assert runway.available_cents == 475
    assert runway.runs_out_at == at("2027-02-12T02:00:00")
    assert runway.deletion_at == at("2027-03-01T00:00:00") + timedelta(days=92)

    session.add(Card(customer_id=customer.id, stripe_payment_method_id="pm_taxed", fingerprint="fp_taxed",
                     brand="visa", last4="4242", exp_month=12, exp_year=2099, is_default=True))
    session.commit()
    assert voucher_runway(session, customer.id, NOW) is None
