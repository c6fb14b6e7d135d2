"""Customer pages benchmark.

One customer with a realistic history (24 invoices, mostly paid and two open; 3 cards; 5
deployments, 3 running; ~300 ledger entries from top-ups, voucher redemptions, invoice payments and
adjustments; card charge attempts and a declined one; saved-card top-up attempts; a billing profile
and a spending limit) is seeded on the benchmark's own PostgreSQL database through the app's own
services. The bench logs in over HTTP (a real server-side session), then, under gunicorn (2 gthread
workers, the same settings as the ceiling page), loads each customer page over 8 keep-alive
connections: dashboard, invoices list, one invoice, activity, cards and balance — and first the
frame page of bench/frame_app.py (the site frame alone, behind everything a customer page runs:
`frame_ratio` is the most any customer page can reach here). Every response must
be 200 and show the customer's content (the failures are counted). The ceiling page
(bench/ceiling_app.py) is measured in the same run, before and after the pages (the ratios use the
mean of the two), and the SQL statements of one dashboard request
are counted in-process. Prints one line per page, then as the last line the ratios to the ceiling.

Usage: python bench/pages.py [--requests 2000] [--ceiling-requests 4000] [--connections 8] [--database-url URL]
Environment: BENCH_DATABASE_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/paydesk_bench_pages),
BENCH_REDIS_URL (default redis://127.0.0.1:6379/13: settlement jobs the seeding requests are enqueued there, never run).
"""

import argparse
import http.client
import os
import re
import sys
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    free_port,
    measure_ceiling,
    process_tree_cpu_seconds,
    recreate_database,
    run_load,
    start_gunicorn,
    stop_gunicorn,
)

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/paydesk_bench_pages")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
SECRET_KEY = "bench-pages-secret-key-not-for-production"
EMAIL = "ada.pages@example.com"
PASSWORD = "correct horse battery staple pages"
INVOICES = 24
OPEN_INVOICES = 2


def app_env(database_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "JOBS_MODE": "rq",
        "SECRET_KEY": SECRET_KEY,
        "RATELIMIT_STORAGE_URI": "memory://",
        # Pages must not call Stripe: nothing listens here.
        "STRIPE_API_BASE": "http://127.0.0.1:9",
        "BASE_URL": "http://127.0.0.1:5000",
        "MAIL_BACKEND": "console",
        "VAT_RATE": "0.19",
    }


def make_app(database_url: str):
    for key, value in app_env(database_url).items():
        os.environ[key] = value
    from app import create_app

    return create_app()


# ------------------------------------------------------------------ seeding ---
def seed(app) -> dict:
    """The customer and its history, through the app's services. Returns what the pages must show."""
    from sqlalchemy import func, select

    from app import accounts
    from app.billing import pricing, spending_limits
    from app.billing.invoices import (
        LineSpec,
        apply_payment,
        create_invoice,
        issue_invoice,
        lock_invoice,
        pay_from_balance,
    )
    from app.billing.ledger import post_entry
    from app.billing.profile import BillingProfile, update_billing_profile
    from app.billing.topups import credit_topup
    from app.billing.usage import record_deployment_event
    from app.billing.vouchers import create_voucher_batch, redeem_voucher
    from app.extensions import db
    from app.models import BillingCustomer, Card, ChargeAttempt, Invoice, LedgerEntry
    from app.models.stripe_events import CardTopup

    with app.app_context():
        session = db.session
        admin = accounts.create_user(session, "admin.pages@example.com", PASSWORD + " admin", is_admin=True)
        user = accounts.create_user(session, EMAIL, PASSWORD, name="Ada Lovelace")
        customer_id = user.id
        update_billing_profile(session, customer_id, BillingProfile(
            name="Ada Lovelace", company="Analytical Engines Ltd", address="12 St James's Square", postcode="SW1Y 4JH",
            city="London", country="GB", vat_id=""))
        session.add(BillingCustomer(customer_id=customer_id, stripe_customer_id="cus_benchpages"))
        cards = []
        for n, (last4, year) in enumerate((("4242", 2099), ("0341", 2098), ("4444", 2097))):
            cards.append(Card(customer_id=customer_id, stripe_payment_method_id=f"pm_bench_pages_{n}",
                              fingerprint=f"fp_bench_{n}", brand="visa" if n != 2 else "mastercard", last4=last4,
                              exp_month=12, exp_year=year, is_default=n == 0))
        session.add_all(cards)
        session.commit()

        # Top-ups (cash) and voucher redemptions: the funds that pay most invoices.
        for n in range(245):
            credit_topup(session, customer_id, payment_intent_id=f"pi_bench_pages_{n:04d}", amount_cents=2500 + 37 * n)
            session.commit()
        batch = create_voucher_batch(session, actor_id=admin.id, count=20, value_cents=1500, max_redemptions=1,
                                     expires_at=None, note="bench pages", request_key="bench-pages-batch")
        for _voucher, code in batch.codes:
            redeem_voucher(session, customer_id=customer_id, code=code)
        for n in range(20):
            post_entry(session, customer_id=customer_id, account="cash", amount_cents=(-1) ** n * 150, kind="admin_adjustment",
                       idempotency_key=f"admin-adjustment:bench-pages-{n}", note="goodwill" if n % 2 == 0 else "correction")
            session.commit()
        # Saved-card top-up attempts (succeeded, declined).
        for n in range(12):
            session.add(CardTopup(customer_id=customer_id, card_id=cards[n % 3].id, amount_cents=1000 + n, currency="usd",
                                  idempotency_key=f"card-topup:bench-pages-{n}",
                                  status="declined" if n % 4 == 3 else "succeeded",
                                  payment_intent_id=f"pi_bench_card_topup_{n}",
                                  error_code="card_declined" if n % 4 == 3 else None,
                                  error_message="Your card was declined." if n % 4 == 3 else None))
        session.commit()

        # 24 invoices over two years: 22 paid (balance, card, bank transfer), 2 open.
        start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0) - timedelta(days=31 * INVOICES)
        numbers = []
        for n in range(INVOICES):
            lines = [LineSpec(f"VM small · month {n + 1}", 1200 + 13 * n), LineSpec(f"Kubernetes cluster · month {n + 1}", 2400 + 7 * n),
                     LineSpec("Public IPv4", 300)]
            invoice = create_invoice(session, customer_id, lines, tax_rate=Decimal("0.19"))
            issue_invoice(session, invoice.id, now=start + timedelta(days=31 * n))
            session.commit()
            numbers.append(invoice.number)
            if n >= INVOICES - OPEN_INVOICES:
                continue
            invoice = lock_invoice(session, invoice.id)
            if n % 3 == 0:
                pay_from_balance(session, invoice, "voucher", min(500, invoice.amount_due_cents))
                pay_from_balance(session, invoice, "cash", invoice.amount_due_cents)
            elif n % 3 == 1:
                if n % 2:
                    session.add(ChargeAttempt(invoice_id=invoice.id, customer_id=customer_id, card_id=cards[1].id, attempt_no=1,
                                              idempotency_key=f"charge:bench-pages:{invoice.id}:1", amount_cents=invoice.amount_due_cents,
                                              status="declined", error_code="card_declined", error_message="Your card was declined."))
                attempt = ChargeAttempt(invoice_id=invoice.id, customer_id=customer_id, card_id=cards[0].id, attempt_no=2,
                                        idempotency_key=f"charge:bench-pages:{invoice.id}:2", amount_cents=invoice.amount_due_cents,
                                        status="succeeded", payment_intent_id=f"pi_bench_charge_{invoice.id}")
                session.add(attempt)
                session.flush()
                apply_payment(session, invoice, source="card", amount_cents=invoice.amount_due_cents, charge_attempt_id=attempt.id,
                              payment_intent_id=attempt.payment_intent_id)
            else:
                apply_payment(session, invoice, source="bank_transfer", amount_cents=invoice.amount_due_cents,
                              reference=f"SEPA bench {n}")
            session.commit()

        # 5 deployments (3 running), plans priced per hour, started this month and earlier.
        now = datetime.now(UTC)
        for size, price in (("small", "0.020000"), ("medium", "0.045000"), ("large", "0.090000")):
            pricing.create_plan(session, admin.id, kind="vm", size=size, public_ip=False, hourly_price=Decimal(price),
                                effective_at=now - timedelta(days=800))
        for n, (size, started_days, deleted_days) in enumerate(
                (("small", 40, None), ("medium", 20, None), ("large", 3, None), ("small", 60, 30), ("medium", 10, 2))):
            external = f"vm-bench-{n}"
            record_deployment_event(session, event_id=f"ev-{external}-created", deployment_id=external, customer_id=customer_id,
                                    kind="created", occurred_at=now - timedelta(days=started_days), plan=f"vm-{size}",
                                    name=f"web-{n}")
            record_deployment_event(session, event_id=f"ev-{external}-succeeded", deployment_id=external, customer_id=customer_id,
                                    kind="succeeded", occurred_at=now - timedelta(days=started_days, seconds=-90))
            if deleted_days is not None:
                record_deployment_event(session, event_id=f"ev-{external}-deleted", deployment_id=external, customer_id=customer_id,
                                        kind="deleted", occurred_at=now - timedelta(days=deleted_days))
        spending_limits.set_customer_limit(session, customer_id, 25000)
        session.commit()

        ledger_count = session.scalar(select(func.count(LedgerEntry.id)).where(LedgerEntry.customer_id == customer_id))
        open_invoice = session.scalar(select(Invoice).where(Invoice.customer_id == customer_id, Invoice.state == "open")
                                      .order_by(Invoice.id))
        return {"customer_id": customer_id, "numbers": numbers, "ledger_entries": ledger_count,
                "open_invoice_id": open_invoice.id, "open_invoice_number": open_invoice.number}


# ------------------------------------------------------------------- login ---
def login(port: int) -> str:
    """Log in over HTTP like a browser; returns the Cookie header of the live session."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/login")
    response = conn.getresponse()
    body = response.read().decode()
    cookie = response.getheader("Set-Cookie").split(";", 1)[0]
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', body) or re.search(r'value="([^"]+)"[^>]*name="csrf_token"', body)
    form = urlencode({"csrf_token": token.group(1), "email": EMAIL, "password": PASSWORD}).encode()
    conn.request("POST", "/login", body=form, headers={"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
    response = conn.getresponse()
    response.read()
    if response.status not in (302, 303):
        raise SystemExit(f"login answered {response.status}")
    cookie = response.getheader("Set-Cookie").split(";", 1)[0]
    # The first page puts the CSRF token into the session cookie; keep the cookie the browser would
    # keep from then on (an old cookie would make every request mint and sign a new token).
    conn.request("GET", "/dashboard", headers={"Cookie": cookie})
    response = conn.getresponse()
    response.read()
    if response.getheader("Set-Cookie"):
        cookie = response.getheader("Set-Cookie").split(";", 1)[0]
    conn.close()
    return cookie


def count_dashboard_queries(app, cookie: str) -> int:
    """SQL statements one dashboard request sends, counted in-process with the same session cookie."""
    from sqlalchemy import event

    from app.extensions import db

    with app.app_context():
        engine = db.engine
    counted = []

    def count(_conn, _cursor, statement, *_args):
        counted.append(statement)

    client = app.test_client()
    name, value = cookie.split("=", 1)
    client.set_cookie(name, value, domain="localhost")
    client.get("/dashboard")  # warm: templates compiled, the session's last_seen moved
    event.listen(engine, "before_cursor_execute", count)
    try:
        response = client.get("/dashboard")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    if response.status_code != 200 or EMAIL.encode() not in response.data:
        raise SystemExit(f"in-process dashboard answered {response.status_code}")
    return len(counted)


# ------------------------------------------------------------------- pages ---
def check_page(port: int, path: str, cookie: str, must_show: list[str], samples: int = 8) -> int:
    """Fetch `path` a few times on one connection; count responses that are not 200 or miss content."""
    failures = 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(samples):
        conn.request("GET", path, headers={"Cookie": cookie})
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
        if response.status != 200 or any(text not in body for text in must_show):
            failures += 1
            missing = [text for text in must_show if text not in body]
            print(f"  {path}: status {response.status}, missing {missing}", file=sys.stderr)
    conn.close()
    return failures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000, help="requests per page")
    parser.add_argument("--ceiling-requests", type=int, default=4000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--database-url", default=DATABASE_URL)
    args = parser.parse_args()

    recreate_database(args.database_url)
    app = make_app(args.database_url)
    facts = seed(app)
    print(f"seeded: ledger_entries={facts['ledger_entries']} invoices={len(facts['numbers'])}", flush=True)

    pages = [
        # The floor every customer page stands on (bench/frame_app.py): session check, hooks, headers, frame.
        ("frame", "/bench/frame", [EMAIL, "<h1>Frame</h1>"]),
        ("dashboard", "/dashboard", [EMAIL, "Ada Lovelace", facts["open_invoice_number"]]),
        ("invoices", "/invoices", [facts["numbers"][-1], facts["numbers"][-20]]),
        ("invoice", f"/invoices/{facts['open_invoice_id']}", [facts["open_invoice_number"], "Analytical Engines Ltd"]),
        ("activity", "/activity", [EMAIL, "Visa ending 4242"]),
        ("cards", "/cards", ["4242", "0341", "4444"]),
        ("balance", "/balance", [EMAIL, "4242"]),
    ]

    # The ceiling before and after the pages: the machine is shared, so the ratios use the mean.
    ceiling_before = measure_ceiling(args.database_url, args.ceiling_requests, args.connections)
    port = free_port()
    proc = start_gunicorn("bench.frame_app:app", app_env(args.database_url), port)
    results = {}
    failures = 0
    try:
        cookie = login(port)
        dashboard_queries = count_dashboard_queries(app, cookie)
        for name, path, must_show in pages:
            failures += check_page(port, path, cookie, must_show)
            run_load(port, [("GET", path, None, {"Cookie": cookie})] * 200, args.connections)  # warm both workers
            cpu_before = process_tree_cpu_seconds(proc.pid)
            result = run_load(port, [("GET", path, None, {"Cookie": cookie})] * args.requests, args.connections)
            cpu_ms = (process_tree_cpu_seconds(proc.pid) - cpu_before) * 1000 / args.requests
            failures += len(result.bad_statuses)
            results[name] = result
            print(f"page {name}: {path} rps={result.per_s:.0f} p50_ms={result.percentile_ms(50):.1f} "
                  f"p99_ms={result.percentile_ms(99):.1f} app_cpu_ms_per_request={cpu_ms:.2f} "
                  f"bad={len(result.bad_statuses)}", flush=True)
        failures += sum(check_page(port, path, cookie, must_show, samples=2) for _, path, must_show in pages)
    finally:
        stop_gunicorn(proc)

    ceiling_after = measure_ceiling(args.database_url, args.ceiling_requests, args.connections)
    ceiling_rps = (ceiling_before.per_s + ceiling_after.per_s) / 2
    print(f"page ceiling: rps_before={ceiling_before.per_s:.0f} rps_after={ceiling_after.per_s:.0f} "
          f"p99_ms={max(ceiling_before.percentile_ms(99), ceiling_after.percentile_ms(99)):.1f}", flush=True)
    ratios = {name: result.per_s / ceiling_rps for name, result in results.items()}
    p99 = {name: result.percentile_ms(99) for name, result in results.items()}
    frame_ratio, frame_p99 = ratios.pop("frame"), p99.pop("frame")  # the floor, not a page of the aim
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    parts = [f"ceiling_rps={ceiling_rps:.0f}", f"dashboard_rps={results['dashboard'].per_s:.0f}",
             f"dashboard_ratio={ratios['dashboard']:.2f}", f"dashboard_p99_ms={p99['dashboard']:.1f}"]
    parts += [f"{name}_ratio={ratios[name]:.2f}" for name in ratios if name != "dashboard"]
    parts += [f"min_ratio={min(ratios.values()):.2f}", f"max_p99_ms={max(p99.values()):.1f}",
              f"dashboard_queries={dashboard_queries}", f"frame_ratio={frame_ratio:.2f}", f"frame_p99_ms={frame_p99:.1f}",
              f"failures={failures}", f"load1={load:.1f}"]
    print("bench pages: " + " ".join(parts))
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    threading.current_thread().name = "bench-pages"
    main()
