"""Foresight (SPEC §16): usage so far this month, the projected invoice, the runway and the
suggested top-up, against hand-computed figures, through the real pages and services."""

import re
from datetime import timedelta

import pytest

from app.billing.foresight import customer_forecast
from app.billing.ledger import post_entry
from tests.conftest import PLATFORM_TOKEN, login
from tests.integration.dunning_helpers import at, travel
from tests.integration.usage_helpers import add_card, make_plan, run_deployment

pytestmark = pytest.mark.integration


@pytest.fixture
def vat_19(app):
    saved = app.config["VAT_RATE"]
    app.config["VAT_RATE"] = "0.19"
    yield
    app.config["VAT_RATE"] = saved


def _fund(session, customer, *, cash=0, voucher=0):
    for account, cents in (("cash", cash), ("voucher", voucher)):
        if cents:
            post_entry(session, customer_id=customer.id, account=account, amount_cents=cents,
                       kind="topup" if account == "cash" else "voucher_redemption",
                       idempotency_key=f"test-{account}-{customer.id}-{cents}")
    session.commit()


def _text(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</(?:p|strong|th|td|a)>', html, re.S)
    assert match, f"#{element_id} not found"
    return " ".join(re.sub(r"<[^>]+>", "", match.group(1)).split())


def test_a_vm_started_on_the_10th_shows_hours_cost_so_far_and_projected_month_end_on_the_20th(
    app, session, factory, client, vat_19
):
    customer = factory.customer(email="tenth@example.com")
    add_card(session, customer)
    make_plan(session, price="0.100000")
    run_deployment(session, customer, "vm-tenth", "vm-small", "2026-11-10T00:00:00", name="web-1")
    # a second one ran 12 hours on the 12th and was deleted: it stays on this month's invoice
    run_deployment(session, customer, "vm-short", "vm-small", "2026-11-12T00:00:00", "2026-11-12T12:00:00",
                   name="batch")

    with travel(at("2026-11-20T00:00:00")):
        forecast = customer_forecast(session, customer.id)
        login(client, customer.email)
        html = client.get("/dashboard").get_data(as_text=True)

    # 10 days = 240 h × $0.10 = $24.00 so far; to 1 December: 21 days = 504 h = $50.40.
    # Plus the stopped one: 12 h = $1.20. Subtotal $51.60, VAT 19 % = 9.804 → $9.80, total $61.40.
    rows = {row.name: row for row in forecast.deployments}
    assert (rows["web-1"].hours_so_far, rows["web-1"].cost_so_far_cents, rows["web-1"].projected_cents) == (
        "240.00", 2400, 5040)
    assert (rows["batch"].hours_so_far, rows["batch"].cost_so_far_cents, rows["batch"].projected_cents) == (
        "12.00", 120, 120)
    assert (forecast.so_far_hours, forecast.so_far_cents) == ("252.00", 2520)
    assert (forecast.projected_subtotal_cents, forecast.projected_tax_cents, forecast.projected_total_cents) == (
        5160, 980, 6140)

    assert _text(html, "usage-hours") == "252.00"
    assert _text(html, "usage-so-far") == "$25.20"
    assert _text(html, "usage-projected-subtotal") == "$51.60"
    assert _text(html, "forecast-total") == "$61.40"
    assert "($51.60 + $9.80 tax)" in html
    assert re.search(r'id="usage-\d+"><td>web-1</td><td>vm-small</td>\s*<td class="num">\$0.10</td>'
                     r'<td class="num">240.00</td>\s*<td class="num">\$24.00</td>\s*<td class="num">\$50.40', html)


def test_the_admin_customer_page_shows_the_same_forecast(app, session, factory, client, vat_19):
    customer = factory.customer(email="admin-view@example.com")
    add_card(session, customer)
    make_plan(session, price="0.100000")
    run_deployment(session, customer, "vm-admin-view", "vm-small", "2026-11-10T00:00:00", name="web-1")
    factory.admin()
    session.commit()
    with travel(at("2026-11-20T00:00:00")):
        login(client, "root@example.com", "admin-password-1")
        html = client.get(f"/admin/customers/{customer.id}").get_data(as_text=True)
    assert "So far this month (unbilled): 240.00 hours, $24.00 before tax." in html
    assert _text(html, "admin-forecast-total") == "$59.98"  # 50.40 + 9.576 → 9.58


def test_usage_already_on_an_invoice_is_not_counted_again(app, session, factory):
    from app.billing.invoices import LineSpec, create_invoice, issue_invoice
    from app.models.usage import Deployment

    customer = factory.customer(email="billed@example.com")
    add_card(session, customer)
    make_plan(session, price="0.100000")
    run_deployment(session, customer, "vm-billed", "vm-small", "2026-11-10T00:00:00", name="web-1")
    # 100 hours of November already invoiced (as a by-hand month-to-date invoice records them)
    with travel(at("2026-11-14T04:00:00")):
        deployment = session.query(Deployment).filter_by(external_id="vm-billed").one()
        line = LineSpec("web-1", 1000, deployment_id=deployment.id, seconds=100 * 3600)
        invoice = create_invoice(session, customer.id, [line], tax_rate=0, billing_period="2026-11")
        issue_invoice(session, invoice.id, now=at("2026-11-14T04:00:00"))
        session.commit()
    forecast = customer_forecast(session, customer.id, at("2026-11-20T00:00:00"))
    # 240 h ran, 100 h invoiced: 140 h = $14.00 so far; at month end 404 h = $40.40 still to invoice
    assert (forecast.so_far_hours, forecast.so_far_cents, forecast.projected_subtotal_cents) == ("140.00", 1400, 4040)


def test_runway_with_25_cash_and_10_voucher_at_5_cents_an_hour_names_the_exact_hour(app, session, factory, client):
    customer = factory.customer(email="runway@example.com")
    _fund(session, customer, cash=2500, voucher=1000)
    make_plan(session, price="0.050000")
    run_deployment(session, customer, "vm-runway", "vm-small", "2026-11-15T05:00:00", name="app")

    # $35.00 at $0.05/h = 700 h = 29 days 4 hours after 15 November 05:00: 14 December, 09:00 UTC.
    # Without a card the December invoice stays unpaid; deletion follows 92 days after 1 January.
    expected = ("Your balance covers your deployments until 14 December, 09:00 UTC; without a card or a top-up, "
                "the invoices stay unpaid and your deployments would be deleted on 3 April 2027.")
    for moment in ("2026-11-15T05:00:00", "2026-11-20T17:00:00"):  # 132 h later: $6.60 used, 568 h left
        with travel(at(moment)):
            forecast = customer_forecast(session, customer.id)
            login(client, customer.email)
            html = client.get("/dashboard").get_data(as_text=True)
        assert forecast.runway.runs_out_at == at("2026-12-14T09:00:00")
        assert forecast.runway_sentence == expected
        assert _text(html, "foresight-runway") == expected

    # Suggested top-up to the end of next month, on 15 November 05:00: November 379 h = $18.95,
    # December 744 h = $37.20; $56.15 − $35.00 = $21.15. The link prefills the top-up form.
    with travel(at("2026-11-15T05:00:00")):
        forecast = customer_forecast(session, customer.id)
        login(client, customer.email)
        html = client.get("/dashboard").get_data(as_text=True)
        assert forecast.suggested_topup_cents == 2115
        assert 'href="/balance?amount=21.15"' in html
        balance = client.get("/balance?amount=21.15").get_data(as_text=True)
    assert re.search(r'<input[^>]*id="amount"[^>]*value="21.15"', balance)


def test_a_card_holder_is_told_the_card_pays_after_the_balance(app, session, factory):
    customer = factory.customer(email="runway-card@example.com")
    _fund(session, customer, cash=2500, voucher=1000)
    add_card(session, customer)
    make_plan(session, price="0.050000")
    run_deployment(session, customer, "vm-runway-card", "vm-small", "2026-11-15T05:00:00")
    forecast = customer_forecast(session, customer.id, at("2026-11-15T05:00:00"))
    assert forecast.runway_sentence == ("Your balance covers your deployments until 14 December, 09:00 UTC; "
                                        "after that, your card pays your invoices.")


def test_the_prefill_ignores_amounts_that_are_not_plain(app, session, factory, client):
    customer = factory.customer(email="prefill@example.com")
    login(client, customer.email)
    for bad in ("1e999990", "-5", "12.345", "abc", "9" * 40):
        response = client.get(f"/balance?amount={bad}")
        assert response.status_code == 200
        assert not re.search(r'<input[^>]*id="amount"[^>]*value="[^"]', response.get_data(as_text=True))


def test_can_deploy_with_only_cash_says_a_card_or_voucher_is_required_and_cash_does_not_qualify(
    app, session, factory, client
):
    customer = factory.customer(email="cash-only@example.com")
    _fund(session, customer, cash=2500)
    make_plan(session, price="0.100000")
    with travel(at("2026-11-21T00:00:00")):
        body = client.get(f"/api/v1/customers/{customer.id}/can-deploy?plan=vm-small",
                          headers={"Authorization": f"Bearer {PLATFORM_TOKEN}"}).get_json()
    assert (body["allowed"], body["code"]) == (False, "no_payment_method")
    assert body["reason"] == (
        "No usable card. No voucher balance. The cash balance ($25.00) pays invoices but does not qualify for "
        "new deployments. A card, or a voucher balance of at least $24.00, is required.")

    _fund(session, customer, voucher=1000)
    with travel(at("2026-11-21T00:00:00")):
        body = client.get(f"/api/v1/customers/{customer.id}/can-deploy?plan=vm-small",
                          headers={"Authorization": f"Bearer {PLATFORM_TOKEN}"}).get_json()
    assert (body["allowed"], body["code"]) == (False, "insufficient_voucher")
    assert "The voucher balance ($10.00) does not cover" in body["reason"]
    assert "The cash balance ($25.00) pays invoices but does not qualify" in body["reason"]


def test_the_panel_alone_is_served_for_its_in_place_refresh(app, session, factory, client):
    customer = factory.customer(email="fragment@example.com")
    login(client, customer.email)
    html = client.get("/dashboard/foresight", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert html.lstrip().startswith('<section id="foresight-panel"')
    assert "Nothing has run this month yet." in html


def test_runway_hours_tick_down_with_unbilled_usage_rounded_like_the_invoice(app, session, factory):
    customer = factory.customer(email="tick@example.com")
    _fund(session, customer, voucher=1000)
    make_plan(session, price="0.030000")
    run_deployment(session, customer, "vm-tick", "vm-small", "2026-11-15T00:00:00")
    # 50 h later: 150 cents used; 850 left at 3 cents/h = 283.33 h → 283 h 20 min after that
    forecast = customer_forecast(session, customer.id, at("2026-11-17T02:00:00"))
    assert forecast.runway.available_cents == 850
    assert forecast.runway.runs_out_at == at("2026-11-17T02:00:00") + timedelta(hours=283, minutes=20)
