"""Webhook ingestion benchmark.

Signed Stripe events (payment_intent.succeeded top-ups, 20% of deliveries duplicates of events
already sent) are posted by a threaded load generator on 127.0.0.1 to the app under gunicorn
(2 workers) on its own PostgreSQL database. Prints deliveries handled per second, unique events
applied per second and the p95 latency, then checks that every unique event was credited exactly
once. Usage: python bench/webhooks.py [--events 6000] [--threads 16]
Environment: BENCH_DATABASE_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/paydesk_bench_webhooks),
BENCH_REDIS_URL (default redis://127.0.0.1:6379/14; settlement jobs are enqueued there, never run).
"""

import argparse
import hashlib
import hmac
import http.client
import json
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/paydesk_bench_webhooks"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
SECRET = "whsec_bench_webhooks"
CUSTOMERS = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recreate_database() -> None:
    from app.migrate import upgrade_database

    url = make_url(DATABASE_URL)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"),
            {"d": url.database},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}"'))
        conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    admin.dispose()
    upgrade_database(DATABASE_URL)


def seed_customers(engine) -> list[tuple[int, str]]:
    with engine.begin() as conn:
        rows = []
        for n in range(CUSTOMERS):
            user_id = conn.execute(
                text(
                    "INSERT INTO users (email, password_hash, is_admin, created_at, cash_balance_cents, "
                    "voucher_balance_cents, on_hold, disputed) VALUES (:e, 'x', false, now(), 0, 0, false, false) "
                    "RETURNING id"
                ),
                {"e": f"bench{n}@example.com"},
            ).scalar_one()
            stripe_id = f"cus_bench{n:05d}"
            conn.execute(
                text("INSERT INTO billing_customers (customer_id, stripe_customer_id, created_at) VALUES (:c, :s, now())"),
                {"c": user_id, "s": stripe_id},
            )
            rows.append((user_id, stripe_id))
    return rows


def signed(evt: dict) -> tuple[bytes, str]:
    payload = json.dumps(evt).encode()
    ts = int(time.time())
    mac = hmac.new(SECRET.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return payload, f"t={ts},v1={mac}"


def build_deliveries(customers, total: int, duplicate_share: float) -> tuple[list[tuple[bytes, str]], int]:
    unique = round(total * (1 - duplicate_share))
    events = []
    for n in range(unique):
        _, stripe_id = customers[n % len(customers)]
        pi = f"pi_bench_{n:07d}_{secrets.token_hex(3)}"
        events.append(
            {
                "id": f"evt_bench_{n:07d}_{secrets.token_hex(3)}",
                "object": "event",
                "type": "payment_intent.succeeded",
                "created": int(time.time()),
                "data": {
                    "object": {
                        "id": pi, "object": "payment_intent", "amount": 1000, "amount_received": 1000,
                        "currency": "usd", "customer": stripe_id, "status": "succeeded",
                        "metadata": {"paydesk_purpose": "topup"},
                    }
                },
            }
        )
    rng = random.Random(7)
    deliveries = [signed(e) for e in events]
    # Duplicates: re-deliveries of events sent earlier in the stream (as Stripe retries do).
    for _ in range(total - unique):
        position = rng.randrange(1, len(deliveries))
        deliveries.insert(position, deliveries[rng.randrange(0, position)])
    return deliveries, unique


def start_gunicorn(port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": DATABASE_URL,
        "REDIS_URL": REDIS_URL,
        "JOBS_MODE": "rq",
        "SECRET_KEY": "bench",
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_API_BASE": "http://127.0.0.1:9",
        "RATELIMIT_STORAGE_URI": "memory://",
        "PYTHONPATH": str(ROOT),
    }
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    proc = subprocess.Popen(
        [gunicorn, "-w", "2", "-k", "gthread", "--threads", os.environ.get("BENCH_GUNICORN_THREADS", "4"), "-b", f"127.0.0.1:{port}",
         "--log-level", "warning", "wsgi:app"],
        cwd=ROOT, env=env, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except requests.RequestException:
            time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGTERM)
    raise SystemExit("gunicorn did not start")


def process_tree_cpu_seconds(root_pid: int) -> float:
    """utime+stime of a process and its children (gunicorn master + workers), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    tree = {root_pid}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                changed = True
    return sum(times.get(pid, 0.0) for pid in tree)


def run_load(port: int, deliveries, threads: int):
    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()
    cursor = iter(range(len(deliveries)))

    def worker():
        # http.client with keep-alive: the cheapest client, so the generator steals little CPU.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine, bad = [], []
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                break
            payload, header = deliveries[i]
            started = time.perf_counter()
            conn.request("POST", "/stripe/webhook", body=payload,
                         headers={"Stripe-Signature": header, "Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            if response.status != 200:
                bad.append(response.status)
        conn.close()
        with lock:
            latencies.extend(mine)
            errors.extend(bad)

    started = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - started, latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--duplicates", type=float, default=0.2)
    args = parser.parse_args()

    recreate_database()
    engine = create_engine(DATABASE_URL)
    customers = seed_customers(engine)
    deliveries, unique = build_deliveries(customers, args.events, args.duplicates)
    port = free_port()
    proc = start_gunicorn(port)
    try:
        cpu_before = process_tree_cpu_seconds(proc.pid)
        generator_before = time.process_time()
        elapsed, latencies, errors = run_load(port, deliveries, args.threads)
        generator_cpu = time.process_time() - generator_before
        server_cpu = process_tree_cpu_seconds(proc.pid) - cpu_before
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)

    with engine.connect() as conn:
        entries = conn.execute(text("SELECT count(*) FROM ledger_entries WHERE kind = 'topup'")).scalar_one()
        events = conn.execute(text("SELECT count(*) FROM stripe_events")).scalar_one()
        cash = conn.execute(text("SELECT coalesce(sum(cash_balance_cents), 0) FROM users")).scalar_one()
    engine.dispose()
    try:
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
    except Exception:
        pass

    p95 = statistics.quantiles(latencies, n=100)[94] * 1000
    duplicates_pct = round(100 * (len(deliveries) - unique) / len(deliveries))
    print(f"deliveries={len(deliveries)} unique={unique} elapsed_s={elapsed:.1f} non_200={len(errors)}")
    print(f"applied: ledger_topups={entries} stripe_events={events} cash_total_cents={cash} "
          f"(expected {unique}, {unique}, {unique * 1000})")
    print(f"p50_ms={statistics.median(latencies) * 1000:.1f} p95_ms={p95:.1f} "
          f"applied_per_s={unique / elapsed:.0f}")
    load1 = os.getloadavg()[0]
    print(f"app CPU per delivery: {server_cpu / len(deliveries) * 1000:.2f} ms (gunicorn workers only); "
          f"load average at the end {load1:.1f} on {os.cpu_count()} cores (other processes share them)")
    print(f"load generator CPU per delivery: {generator_cpu / len(deliveries) * 1000:.2f} ms "
          f"({args.threads} threads, payloads signed before the timed section)")
    ok = entries == unique and events == unique and cash == unique * 1000 and not errors
    print(f"bench webhooks: events_per_s={len(deliveries) / elapsed:.0f} p95_ms={p95:.0f} "
          f"duplicates={duplicates_pct}%{'' if ok else ' EXACTLY-ONCE CHECK FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
