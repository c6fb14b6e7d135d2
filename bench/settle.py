"""Benchmark: settle 10,000 open invoices across 5,000 customers funded by cash balance, with 2 real
`rq worker` processes on PostgreSQL, against the single-row UPDATE rate PostgreSQL sustains here.

    python bench/settle.py [--customers 5000] [--invoices-per-customer 2] [--workers 2]
                           [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/paydesk_bench_settle]

Uses its own database (dropped and recreated) and its own private redis-server on a free port.
Data is generated with set-based SQL (users with a cash credit in the ledger, issued invoices with
one line, one settlement request each, written just before its phase). Two production paths are
timed, each by `rq worker --burst` processes of the production worker command (class
`jobs.worker.PaydeskWorker`, the queues of `jobs.queue.WORKER_QUEUES`): first a sample of customers
one job each through `jobs.settlement.settle_customer_job` on the settlement queue — what one funds
arrival enqueues after its commit (`enqueue_settlement`), run in the worker process: its own
customer in one transaction under the advisory lock when the balances pay, then, as requests pile up
behind it, the waiting ones drained set-based (`drain_waiting_requests`) — then everyone else
through `settle_customers_job` in batches — what the monthly invoicing job enqueues — whose
voucher/cash part is set-based (`settle_balances_bulk`, same order, keys and locks as the engine)
and whose leftovers go through the engine. The reference rate is a loop of `UPDATE … WHERE id = $1` + COMMIT from
one connection, measured in the same run. Last line: `bench settle: invoices_per_s=… pg_update_tps=… ratio=…
 engine_invoices_per_s=… engine_ratio=…` (batch path first, the one-customer engine after).
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

BATCH = 100


def recreate(url: str) -> None:
    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d "
                          "AND pid <> pg_backend_pid()"), {"d": parsed.database})
        conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}"'))
        conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


GENERATE = [
    """INSERT INTO users (email, password_hash, is_admin, created_at, cash_balance_cents, voucher_balance_cents,
                          on_hold, disputed, name)
       SELECT 'c' || g || '@bench.local', 'x', false, now(), 0, 0, false, false, 'Customer ' || g
       FROM generate_series(1, :customers) g""",
    # invoices: amounts 100..1099 cents, issued, numbered 2026-000001…
    """INSERT INTO invoices (customer_id, state, number, number_year, number_seq, currency, subtotal_cents,
                             tax_rate, tax_cents, total_cents, paid_cents, buyer_email, created_at, issued_at)
       SELECT u.id, 'open', '2026-' || lpad(CAST(row_number() OVER (ORDER BY u.id, k) AS text), 6, '0'), 2026,
              row_number() OVER (ORDER BY u.id, k), 'usd', 100 + ((u.id * 7 + k * 13) % 1000), 0, 0,
              100 + ((u.id * 7 + k * 13) % 1000), 0, u.email, now(), now() - k * interval '1 hour'
       FROM users u, generate_series(1, :per_customer) k""",
    """INSERT INTO invoice_lines (invoice_id, position, description, amount_cents)
       SELECT id, 0, 'Usage', total_cents FROM invoices""",
    """INSERT INTO invoice_number_counters (year, last_seq) SELECT 2026, count(*) FROM invoices""",
    # fund every customer with exactly what their invoices cost, through the ledger
    """INSERT INTO ledger_entries (customer_id, account, amount_cents, kind, reference, idempotency_key, created_at)
       SELECT customer_id, 'cash', sum(total_cents), 'bench_credit', 'bench', 'bench-credit-' || customer_id, now()
       FROM invoices GROUP BY customer_id""",
    """UPDATE users u SET cash_balance_cents = l.amount_cents FROM ledger_entries l WHERE l.customer_id = u.id""",
]
# each phase's customers get their settlement requests just before the phase (as their funds or
# invoices would write them), so the engine phase cannot reach the batch phase's customers
REQUESTS = """INSERT INTO settlement_requests (customer_id, generation, requested_at)
              SELECT id, 1, now() FROM users WHERE id = ANY(:ids)"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis() -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def measure_pg_update_tps(url: str, seconds: float = 5.0) -> float:
    """Single-row UPDATE + COMMIT in a loop from one connection: the database's per-transaction floor."""
    import psycopg

    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=False) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_counter (id int PRIMARY KEY, n bigint NOT NULL)")
        conn.execute("INSERT INTO bench_counter SELECT g, 0 FROM generate_series(1, 100) g ON CONFLICT DO NOTHING")
        conn.commit()
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            conn.execute("UPDATE bench_counter SET n = n + 1 WHERE id = %s", (done % 100 + 1,))
            conn.commit()
            done += 1
        return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--invoices-per-customer", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--engine-sample", type=int, default=200,
                        help="customers settled one job each through settle_customer, timed separately")
    parser.add_argument("--database-url", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/paydesk_bench_settle"))
    args = parser.parse_args()

    recreate(args.database_url)
    from app.migrate import upgrade_database

    upgrade_database(args.database_url)
    engine = create_engine(args.database_url)
    t0 = time.perf_counter()
    with engine.begin() as conn:
        for statement in GENERATE:
            conn.execute(text(statement), {"customers": args.customers, "per_customer": args.invoices_per_customer})
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
        invoices = conn.execute(text("SELECT count(*) FROM invoices WHERE state = 'open'")).scalar_one()
        customer_ids = list(conn.execute(text("SELECT id FROM users ORDER BY id")).scalars())
    print(f"generated {args.customers} customers, {invoices} open invoices in {time.perf_counter() - t0:.1f} s")

    redis_proc, redis_url = start_redis()
    env = {**os.environ, "DATABASE_URL": args.database_url, "REDIS_URL": redis_url, "JOBS_MODE": "rq",
           "SECRET_KEY": "bench", "PYTHONPATH": str(ROOT), "MAIL_BACKEND": "console"}
    try:
        os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "JOBS_MODE", "SECRET_KEY")})
        from redis import Redis
        from rq import Queue
        from rq.job import Job

        from jobs.queue import QUEUE_NAME, SETTLEMENT_QUEUE, WORKER_QUEUES
        from jobs.settlement import settle_customer_job, settle_customers_job

        queue = Queue(QUEUE_NAME, connection=Redis.from_url(redis_url))
        settlement_queue = Queue(SETTLEMENT_QUEUE, connection=Redis.from_url(redis_url))
        rq = str(Path(sys.executable).with_name("rq"))
        # The production worker command: the app is built once in the parent; settlement jobs run
        # in the worker process, other jobs in warm forked horses.
        cmd = [rq, "worker", "--burst", "--url", redis_url, "--path", str(ROOT), "--quiet",
               "--worker-class", "jobs.worker.PaydeskWorker", *WORKER_QUEUES]

        def run_phase(jobs):
            """Burst workers until this phase's jobs have ended; then the workers are stopped and what
            the settlements queued besides (receipt emails, each rendering a PDF: not what is measured
            here) is dropped, so that it neither runs in the next phase nor keeps this one going."""
            start = time.perf_counter()
            workers = [subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True) for _ in range(args.workers)]
            deadline = time.monotonic() + 3600
            pending = list(jobs)
            while pending and time.monotonic() < deadline and any(proc.poll() is None for proc in workers):
                statuses = Job.fetch_many([job.id for job in pending], connection=queue.connection)
                pending = [job for job, fetched in zip(pending, statuses, strict=True)
                           if fetched is not None and fetched.get_status() not in ("finished", "failed")]
                time.sleep(0.2)  # polling interval of the bounded wait above
            for proc in workers:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
            queue.empty()
            for job in jobs:
                job.refresh()
            failed = [job.id for job in jobs if job.get_status() != "finished"]
            first = min(job.started_at for job in jobs if job.started_at)
            last = max(job.ended_at for job in jobs if job.ended_at)
            return (last - first).total_seconds(), time.perf_counter() - start, failed

        # Phase 1: a sample of customers through the one-customer engine (what a single trigger runs).
        sample, batched = customer_ids[: args.engine_sample], customer_ids[args.engine_sample :]
        with engine.begin() as conn:
            conn.execute(text(REQUESTS), {"ids": sample})
        engine_jobs = [settlement_queue.enqueue(settle_customer_job, cid) for cid in sample]
        engine_elapsed, _, engine_failed = run_phase(engine_jobs) if engine_jobs else (0.0, 0.0, [])
        with engine.connect() as conn:
            engine_paid = conn.execute(text("SELECT count(*) FROM invoices WHERE state = 'paid'")).scalar_one()
        # Phase 2: everyone else in batches (what the monthly job enqueues after issuing invoices).
        with engine.begin() as conn:
            conn.execute(text(REQUESTS), {"ids": batched})
        jobs = [
            queue.enqueue(settle_customers_job, batched[start : start + BATCH], job_timeout=1800)
            for start in range(0, len(batched), BATCH)
        ]
        elapsed, wall, failed = run_phase(jobs)
        failed += engine_failed
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)

    with engine.connect() as conn:
        paid = conn.execute(text("SELECT count(*) FROM invoices WHERE state = 'paid'")).scalar_one()
        left = conn.execute(text("SELECT count(*) FROM settlement_requests")).scalar_one()
        mismatched = conn.execute(text(
            "SELECT count(*) FROM users u WHERE u.cash_balance_cents <> "
            "(SELECT coalesce(sum(amount_cents), 0) FROM ledger_entries l WHERE l.customer_id = u.id AND l.account = 'cash')"
        )).scalar_one()
        negative = conn.execute(text("SELECT count(*) FROM users WHERE cash_balance_cents < 0")).scalar_one()
        overpaid = conn.execute(text(
            "SELECT count(*) FROM invoices i WHERE i.paid_cents <> "
            "(SELECT coalesce(sum(amount_cents), 0) FROM invoice_payments p WHERE p.invoice_id = i.id)"
        )).scalar_one()
    print(f"settled {paid}/{invoices} invoices in {elapsed:.1f} s of job time ({wall:.1f} s wall including "
          f"worker start-up) with {args.workers} workers; failed jobs {len(failed)}; "
          f"requests left {left}; ledger mismatches {mismatched}; negative balances {negative}; "
          f"paid != payments {overpaid}")

    update_tps = measure_pg_update_tps(args.database_url)
    engine.dispose()
    rate = (paid - engine_paid) / elapsed if elapsed else 0.0
    engine_rate = engine_paid / engine_elapsed if engine_elapsed else 0.0
    print(f"one-customer engine: {engine_paid} invoices of {len(sample)} customers in {engine_elapsed:.1f} s "
          f"= {engine_rate:.0f} invoices/s (ratio {engine_rate / update_tps:.2f})")
    print(f"bench settle: invoices_per_s={rate:.0f} pg_update_tps={update_tps:.0f} ratio={rate / update_tps:.2f} "
          f"engine_invoices_per_s={engine_rate:.0f} engine_ratio={engine_rate / update_tps:.2f}")


if __name__ == "__main__":
    main()
