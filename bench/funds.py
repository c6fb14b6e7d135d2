"""Funds-to-paid latency: top-ups arriving through the Stripe webhook at a steady rate, with the
production workers running, timed from the webhook's 200 to the invoice being paid.

N customers each have one open invoice (issued, 5.00–14.99) and a Stripe customer mapping, and no
funds. The app runs under gunicorn (bench/common.py settings) with `JOBS_MODE=rq`; the production
processes of README "Production processes" run beside it: `--workers` × `rq worker --with-scheduler
--worker-class jobs.worker.PaydeskWorker paydesk-recovery paydesk-settlement paydesk` and one
`rq cron jobs/cron_config.py`. One signed `payment_intent.succeeded` top-up per customer, of exactly
the invoice's amount, is posted at `--rate` arrivals per second (each sent at its scheduled moment,
over keep-alive connections). Per arrival, the latency is `invoices.paid_at` (written by the worker
that paid it, from this machine's clock) minus the moment this script received the 200 (same
clock; a payment written before the 200 reached the script counts as 0).

Afterwards the exactly-once check: every invoice paid, by exactly one cash payment of its amount;
one top-up ledger entry per arrival; cash balances equal to their ledger entries and all back to 0;
no settlement request left. A failure is flagged in the last line and the exit status is 1.

    python bench/funds.py [--arrivals 1000] [--rate 50] [--workers 2] [--connections 8]
                          [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/paydesk_bench_funds]
                          [--redis-url redis://127.0.0.1:6379/11]

Last line: `bench funds: arrivals=… rate_per_s=… p50_ms=… p95_ms=… p99_ms=… paid=N/N`.
"""

import argparse
import hashlib
import hmac
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from bench.common import free_port, recreate_database, start_gunicorn, stop_gunicorn  # noqa: E402

SECRET = "whsec_bench_funds"

SEED = [
    """INSERT INTO users (email, password_hash, is_admin, created_at, cash_balance_cents, voucher_balance_cents,
                          on_hold, disputed, name)
       SELECT 'f' || g || '@bench.local', 'x', false, now(), 0, 0, false, false, 'Customer ' || g
       FROM generate_series(1, :n) g""",
    """INSERT INTO billing_customers (customer_id, stripe_customer_id, created_at)
       SELECT id, 'cus_funds' || lpad(CAST(id AS text), 6, '0'), now() FROM users""",
    """INSERT INTO invoices (customer_id, state, number, number_year, number_seq, currency, subtotal_cents,
                             tax_rate, tax_cents, total_cents, paid_cents, buyer_email, created_at, issued_at)
       SELECT u.id, 'open', '2026-' || lpad(CAST(u.id AS text), 6, '0'), 2026, u.id, 'usd',
              500 + (u.id * 37) % 1000, 0, 0, 500 + (u.id * 37) % 1000, 0, u.email, now(), now()
       FROM users u""",
    """INSERT INTO invoice_lines (invoice_id, position, description, amount_cents)
       SELECT id, 0, 'Usage', total_cents FROM invoices""",
    """INSERT INTO invoice_number_counters (year, last_seq) SELECT 2026, count(*) FROM invoices""",
]


def signed_topup(n: int, stripe_customer: str, amount: int) -> tuple[bytes, dict[str, str]]:
    event = {
        "id": f"evt_funds_{n:07d}", "object": "event", "type": "payment_intent.succeeded",
        "created": int(time.time()),
        "data": {"object": {
            "id": f"pi_funds_{n:07d}", "object": "payment_intent", "amount": amount, "amount_received": amount,
            "currency": "usd", "customer": stripe_customer, "status": "succeeded",
            "metadata": {"paydesk_purpose": "topup"},
        }},
    }
    payload = json.dumps(event).encode()
    ts = int(time.time())
    mac = hmac.new(SECRET.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return payload, {"Stripe-Signature": f"t={ts},v1={mac}", "Content-Type": "application/json"}


def start_processes(env: dict, workers: int, log) -> list[subprocess.Popen]:
    """The README's production worker command × `workers`, and the scheduler; each its own process group."""
    from jobs.queue import WORKER_QUEUES

    rq = str(Path(sys.executable).with_name("rq"))
    commands = [[rq, "worker", "--with-scheduler", "--worker-class", "jobs.worker.PaydeskWorker",
                 "--url", env["REDIS_URL"], "--path", str(ROOT), *WORKER_QUEUES]] * workers
    commands.append([rq, "cron", "--url", env["REDIS_URL"], "--path", str(ROOT), str(ROOT / "jobs" / "cron_config.py")])
    return [subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True, stdout=log, stderr=log)
            for cmd in commands]


def stop_processes(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def wait_for(condition, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout} s waiting for {what}")


def send_at_rate(port: int, arrivals: list[tuple[int, bytes, dict]], rate: float, connections: int):
    """Post arrival i at start + i / rate; returns {customer_id: time.time() of its 200}, bad statuses."""
    answered: dict[int, float] = {}
    bad: list[int] = []
    lock = threading.Lock()
    cursor = iter(range(len(arrivals)))
    start = time.time() + 0.5

    def sender():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                break
            customer_id, body, headers = arrivals[i]
            delay = start + i / rate - time.time()
            if delay > 0:
                time.sleep(delay)  # pacing: the arrival's scheduled moment
            conn.request("POST", "/stripe/webhook", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            done = time.time()
            with lock:
                if response.status == 200:
                    answered[customer_id] = done
                else:
                    bad.append(response.status)
        conn.close()

    threads = [threading.Thread(target=sender) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answered, bad, time.time() - start


def check(engine, arrivals: int) -> list[str]:
    problems = []
    with engine.connect() as conn:
        def one(sql: str):
            return conn.execute(text(sql)).scalar_one()

        figures = {
            "invoices paid": one("SELECT count(*) FROM invoices WHERE state = 'paid' AND paid_cents = total_cents"),
            "invoices with exactly one cash payment of their total": one(
                "SELECT count(*) FROM invoices i WHERE (SELECT count(*) FROM invoice_payments p WHERE "
                "p.invoice_id = i.id) = 1 AND (SELECT sum(amount_cents) FROM invoice_payments p WHERE "
                "p.invoice_id = i.id AND p.source = 'cash') = i.total_cents"),
            "top-up ledger entries": one("SELECT count(*) FROM ledger_entries WHERE kind = 'topup'"),
        }
        for name, value in figures.items():
            if value != arrivals:
                problems.append(f"{name}={value} (expected {arrivals})")
        mismatched = one(
            "SELECT count(*) FROM users u WHERE u.cash_balance_cents <> (SELECT coalesce(sum(amount_cents), 0) "
            "FROM ledger_entries l WHERE l.customer_id = u.id AND l.account = 'cash') OR u.cash_balance_cents <> 0")
        if mismatched:
            problems.append(f"balances not equal to their ledger or not back to 0: {mismatched}")
        left = one("SELECT count(*) FROM settlement_requests")
        if left:
            problems.append(f"settlement requests left: {left}")
    return problems


def percentile_ms(values: list[float], p: int) -> float:
    if len(values) < 2:
        return (values[0] if values else 0.0) * 1000
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arrivals", type=int, default=1000, help="customers, one top-up each")
    parser.add_argument("--rate", type=float, default=50.0, help="arrivals per second")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--database-url", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/paydesk_bench_funds"))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11"))
    args = parser.parse_args()

    import redis
    from rq import Worker

    recreate_database(args.database_url)
    engine = create_engine(args.database_url)
    with engine.begin() as conn:
        for statement in SEED:
            conn.execute(text(statement), {"n": args.arrivals})
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
        rows = conn.execute(text(
            "SELECT i.customer_id, b.stripe_customer_id, i.total_cents FROM invoices i "
            "JOIN billing_customers b ON b.customer_id = i.customer_id ORDER BY i.customer_id")).all()
    redis_client = redis.Redis.from_url(args.redis_url)
    redis_client.flushdb()

    app_env = {"DATABASE_URL": args.database_url, "REDIS_URL": args.redis_url, "JOBS_MODE": "rq", "SECRET_KEY": "bench",
               "STRIPE_WEBHOOK_SECRET": SECRET, "STRIPE_API_BASE": "http://127.0.0.1:9",
               "RATELIMIT_STORAGE_URI": "memory://", "MAIL_BACKEND": "console"}
    env = {**os.environ, "PYTHONPATH": str(ROOT), **app_env}
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-funds-{os.getpid()}.log"
    port = free_port()
    problems: list[str] = []
    with open(log_path, "w") as log:
        procs = start_processes(env, args.workers, log)
        web = start_gunicorn("wsgi:app", app_env, port)
        try:
            wait_for(lambda: len(Worker.all(connection=redis_client)) >= args.workers, 120, "the workers to register")
            arrivals = [(customer_id, *signed_topup(n, stripe_customer, amount))
                        for n, (customer_id, stripe_customer, amount) in enumerate(rows)]
            answered, bad, send_seconds = send_at_rate(port, arrivals, args.rate, args.connections)
            if bad:
                problems.append(f"{len(bad)} deliveries not answered 200: {sorted(set(bad))}")

            def all_paid() -> bool:
                with engine.connect() as conn:
                    return conn.execute(text("SELECT count(*) FROM invoices WHERE state = 'open'")).scalar_one() == 0

            try:
                wait_for(all_paid, 60, "every invoice to be paid")
                wait_for(lambda: _no_requests_left(engine), 30, "the settlement requests to be cleared")
            except SystemExit as exc:
                problems.append(str(exc))
        finally:
            stop_gunicorn(web)
            stop_processes(procs)
    with engine.connect() as conn:
        paid_at = {customer_id: at.astimezone(UTC).timestamp() for customer_id, at in conn.execute(text(
            "SELECT customer_id, paid_at FROM invoices WHERE state = 'paid'"))}
    problems += check(engine, args.arrivals)
    engine.dispose()
    redis_client.flushdb()

    latencies = [max(0.0, paid_at[c] - t) for c, t in answered.items() if c in paid_at]
    paid = len(paid_at)
    load = os.getloadavg()
    print(f"sent {len(answered)} top-ups in {send_seconds:.1f} s ({len(answered) / send_seconds:.1f}/s) to "
          f"{args.workers} workers; webhook-200 → invoice paid: p50 {percentile_ms(latencies, 50):.0f} ms, "
          f"p95 {percentile_ms(latencies, 95):.0f} ms, p99 {percentile_ms(latencies, 99):.0f} ms, "
          f"max {max(latencies, default=0) * 1000:.0f} ms; load average {load[0]:.1f}; worker log {log_path}")
    for problem in problems:
        print("PROBLEM:", problem)
    print(f"bench funds: arrivals={args.arrivals} rate_per_s={args.rate:g} p50_ms={percentile_ms(latencies, 50):.0f} "
          f"p95_ms={percentile_ms(latencies, 95):.0f} p99_ms={percentile_ms(latencies, 99):.0f} "
          f"paid={paid}/{args.arrivals}" + (" FAILED" if problems else ""))
    sys.exit(1 if problems else 0)


def _no_requests_left(engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM settlement_requests")).scalar_one() == 0


if __name__ == "__main__":
    main()
