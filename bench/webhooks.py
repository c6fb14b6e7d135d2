"""Webhook ingestion benchmark, against the ceiling page measured in the same run.

Signed Stripe events (payment_intent.succeeded top-ups for 200 customers, 20% of deliveries
re-deliveries of events already sent, as Stripe's retries are) are posted over keep-alive
connections on 127.0.0.1 to the app under gunicorn (2 gthread workers, as in bench/common.py) on
its own PostgreSQL database. Then the ceiling page (bench/ceiling_app.py: bare Flask, one query, a
template) is served by the same gunicorn settings on the same database and loaded with the same
number of connections, once before and once after the webhook load. The ratio is deliveries/s ÷ the
mean of the two ceiling rates.

Afterwards the exactly-once check: every unique event is recorded once in `stripe_events`, credited
once (one `topup` ledger entry and one `topups` row per payment intent, balances equal to the sum of
the entries), with one receipt notification each and a settlement request (outbox row) for every
credited customer; every delivery, duplicate or not, was answered 200. A failure is flagged in the
last line and the exit status is 1.

    python bench/webhooks.py [--events 6000] [--connections 8] [--duplicates 0.2] [--ceiling-requests N]

Environment: BENCH_DATABASE_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/paydesk_bench_webhooks),
BENCH_REDIS_URL (default redis://127.0.0.1:6379/14; settlement and mail jobs are enqueued there, never
run; the db is flushed before and after).
Last line: `bench webhooks: events_per_s=… ceiling_rps=… ratio=… p95_ms=… duplicates=20%`.
"""

import argparse
import hashlib
import hmac
import json
import os
import random
import secrets
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from bench.common import (  # noqa: E402
    free_port,
    measure_ceiling,
    process_tree_cpu_seconds,
    recreate_database,
    run_load,
    start_gunicorn,
    stop_gunicorn,
)

DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/paydesk_bench_webhooks"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
SECRET = "whsec_bench_webhooks"
CUSTOMERS = 200
AMOUNT_CENTS = 1000
WARMUP_EVENTS = 200  # unique events sent before the timed section (both workers warm); checked too


def seed_customers(engine) -> list[tuple[int, str]]:
    with engine.begin() as conn:
        rows = conn.execute(
            text(
                "INSERT INTO users (email, password_hash, is_admin, created_at, cash_balance_cents, "
                "voucher_balance_cents, on_hold, disputed) "
                "SELECT 'bench' || g || '@example.com', 'x', false, now(), 0, 0, false, false "
                "FROM generate_series(0, :n - 1) g RETURNING id"
            ),
            {"n": CUSTOMERS},
        ).scalars().all()
        customers = [(user_id, f"cus_bench{user_id:05d}") for user_id in sorted(rows)]
        conn.execute(
            text("INSERT INTO billing_customers (customer_id, stripe_customer_id, created_at) VALUES (:c, :s, now())"),
            [{"c": c, "s": s} for c, s in customers],
        )
    return customers


def topup_event(n: int, stripe_customer: str, run: str) -> dict:
    return {
        "id": f"evt_bench_{run}_{n:07d}",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": int(time.time()),
        "data": {
            "object": {
                "id": f"pi_bench_{run}_{n:07d}", "object": "payment_intent", "amount": AMOUNT_CENTS,
                "amount_received": AMOUNT_CENTS, "currency": "usd", "customer": stripe_customer,
                "status": "succeeded", "metadata": {"paydesk_purpose": "topup"},
            }
        },
    }


def signed_request(evt: dict) -> tuple[str, str, bytes, dict[str, str]]:
    payload = json.dumps(evt).encode()
    ts = int(time.time())
    mac = hmac.new(SECRET.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    headers = {"Stripe-Signature": f"t={ts},v1={mac}", "Content-Type": "application/json"}
    return "POST", "/stripe/webhook", payload, headers


def build_deliveries(customers, first: int, unique: int, duplicates: int, run: str, rng: random.Random):
    """`unique` events then `duplicates` re-deliveries of events sent earlier in the stream."""
    deliveries = [
        signed_request(topup_event(n, customers[n % len(customers)][1], run)) for n in range(first, first + unique)
    ]
    for _ in range(duplicates):
        position = rng.randrange(1, len(deliveries))
        deliveries.insert(position, deliveries[rng.randrange(0, position)])
    return deliveries


def flush_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def check_exactly_once(engine, unique: int) -> list[str]:
    """What is wrong with the database after `unique` distinct top-up events; empty when all is well."""
    problems = []
    with engine.connect() as conn:
        def one(sql: str):
            return conn.execute(text(sql)).scalar_one()

        figures = {
            "stripe_events": one("SELECT count(*) FROM stripe_events WHERE outcome = 'applied'"),
            "ledger topup entries": one("SELECT count(*) FROM ledger_entries WHERE kind = 'topup'"),
            "distinct credited payment intents": one(
                "SELECT count(DISTINCT reference) FROM ledger_entries WHERE kind = 'topup'"),
            "topups rows": one("SELECT count(*) FROM topups"),
            "receipt notifications": one("SELECT count(*) FROM notifications WHERE kind = 'topup_receipt'"),
        }
        for name, value in figures.items():
            if value != unique:
                problems.append(f"{name}={value} (expected {unique})")
        cash = one("SELECT coalesce(sum(cash_balance_cents), 0) FROM users")
        if cash != unique * AMOUNT_CENTS:
            problems.append(f"cash_total_cents={cash} (expected {unique * AMOUNT_CENTS})")
        drift = one(
            "SELECT count(*) FROM users u WHERE u.cash_balance_cents <> (SELECT coalesce(sum(amount_cents), 0) "
            "FROM ledger_entries e WHERE e.customer_id = u.id AND e.account = 'cash')")
        if drift:
            problems.append(f"{drift} customers whose balance differs from their ledger")
        unrequested = one(
            "SELECT count(DISTINCT e.customer_id) FROM ledger_entries e LEFT JOIN settlement_requests r "
            "ON r.customer_id = e.customer_id WHERE e.kind = 'topup' AND r.customer_id IS NULL")
        if unrequested:
            problems.append(f"{unrequested} credited customers without a settlement request")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=6000, help="deliveries in the timed section")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections, for both loads")
    parser.add_argument("--duplicates", type=float, default=0.2, help="share of deliveries that are re-deliveries")
    parser.add_argument("--ceiling-requests", type=int, default=None, help="requests to the ceiling page, split before/after (default: --events)")
    args = parser.parse_args()

    recreate_database(DATABASE_URL)
    flush_redis()
    engine = create_engine(DATABASE_URL)
    customers = seed_customers(engine)
    rng = random.Random(7)
    run = secrets.token_hex(3)
    unique = round(args.events * (1 - args.duplicates))
    warmup = build_deliveries(customers, 0, WARMUP_EVENTS, 0, run, rng)

    ceiling_requests = max((args.ceiling_requests or args.events) // 2, 200)
    # the ceiling before and after the webhook load (half the requests each): on a shared machine the
    # load moves, and the mean of both brackets the webhook run better than one measurement
    ceiling_before = measure_ceiling(DATABASE_URL, ceiling_requests, args.connections)
    port = free_port()
    proc = start_gunicorn("wsgi:app", {
        "DATABASE_URL": DATABASE_URL, "REDIS_URL": REDIS_URL, "JOBS_MODE": "rq", "SECRET_KEY": "bench",
        "STRIPE_WEBHOOK_SECRET": SECRET, "STRIPE_API_BASE": "http://127.0.0.1:9", "RATELIMIT_STORAGE_URI": "memory://",
    }, port)
    try:
        warm = run_load(port, warmup, args.connections)
        # signed just before the timed section: well inside the signature's 5-minute tolerance
        deliveries = build_deliveries(customers, WARMUP_EVENTS, unique, args.events - unique, run, rng)
        cpu_before = process_tree_cpu_seconds(proc.pid)
        generator_before = time.process_time()
        load = run_load(port, deliveries, args.connections)
        generator_cpu = time.process_time() - generator_before
        server_cpu = process_tree_cpu_seconds(proc.pid) - cpu_before
    finally:
        stop_gunicorn(proc)
    load1_webhooks = os.getloadavg()[0]

    ceiling_after = measure_ceiling(DATABASE_URL, ceiling_requests, args.connections)
    ceiling_rps = (ceiling_before.per_s + ceiling_after.per_s) / 2
    problems = check_exactly_once(engine, WARMUP_EVENTS + unique)
    engine.dispose()
    flush_redis()
    bad = warm.bad_statuses + load.bad_statuses
    if bad:
        problems.append(f"{len(bad)} deliveries not answered 200 (e.g. {sorted(set(bad))[:5]})")

    ratio = load.per_s / ceiling_rps if ceiling_rps else 0.0
    duplicates_pct = round(100 * (len(deliveries) - unique) / len(deliveries))
    print(f"deliveries={len(deliveries)} unique={unique} (+{WARMUP_EVENTS} warm-up) elapsed_s={load.elapsed_s:.1f} "
          f"connections={args.connections}")
    print(f"webhooks: p50_ms={load.percentile_ms(50):.1f} p95_ms={load.percentile_ms(95):.1f} "
          f"applied_per_s={unique / load.elapsed_s:.0f}; ceiling: {ceiling_before.per_s:.0f} req/s before, "
          f"{ceiling_after.per_s:.0f} after (p95_ms={ceiling_after.percentile_ms(95):.1f}, {ceiling_requests} requests each)")
    print(f"app CPU per delivery: {server_cpu / len(deliveries) * 1000:.2f} ms (gunicorn master + workers); "
          f"load generator {generator_cpu / len(deliveries) * 1000:.2f} ms; load average {load1_webhooks:.1f} "
          f"after the webhook load, {os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} cores")
    print("exactly-once check: " + ("ok" if not problems else "FAILED: " + "; ".join(problems)))
    print(f"bench webhooks: events_per_s={load.per_s:.0f} ceiling_rps={ceiling_rps:.0f} ratio={ratio:.2f} "
          f"p95_ms={load.percentile_ms(95):.0f} duplicates={duplicates_pct}%"
          f"{'' if not problems else ' EXACTLY-ONCE CHECK FAILED'}")
    sys.exit(0 if not problems else 1)


if __name__ == "__main__":
    main()
