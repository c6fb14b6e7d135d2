"""Benchmark: the monthly invoicing run over 100,000 customers, 300,000 deployments, ~1,000,000 events.

    python bench/monthly.py [--customers 100000] [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/paydesk_bench_usage]

`--customers 1000000` is the 10× run (3,000,000 deployments, 9.7 M events). Uses its own PostgreSQL
database (dropped and recreated). Generates the data with generate_series (not timed; foreign keys
of the generated rows are not checked row by row, they hold by construction and are verified once,
set-based, before timing), times `issue_monthly_invoices_bulk` for 2026-10, then a re-run (which must
create nothing), checks that the invoice numbers are gapless, then times a plain INSERT … SELECT of
the same number of invoice lines (the floor) and prints the ratio and the peak RSS of this process.

Both timed sections start after a CHECKPOINT, so neither pays for writing out the dirty buffers of the
phase before it (data generation for the job, the job for the floor). When the PostgreSQL server runs
on this machine, the CPU seconds of the server process doing the work and the seconds it waited for a
CPU (run queue, i.e. other load on the machine) are printed too: on a shared 2-core machine the wall
times are noisy, the CPU seconds much less so.
"""

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

PERIOD = "2026-10"


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
    # customers
    """INSERT INTO users (email, password_hash, is_admin, created_at, cash_balance_cents, voucher_balance_cents,
                          on_hold, disputed, name, country)
       SELECT 'c' || g || '@bench.local', 'x', false, now(), 0, 0, false, false, 'Customer ' || g,
              CASE WHEN g % 2 = 0 THEN 'DE' ELSE 'US' END
       FROM generate_series(1, :customers) g""",
    # 12 plans with one price each
    """INSERT INTO plans (name, kind, size, public_ip, created_at)
       SELECT k || '-' || s || CASE WHEN ip THEN '-ip' ELSE '' END, k, s, ip, now()
       FROM unnest(ARRAY['vm','k8s']) k, unnest(ARRAY['small','medium','large']) s, unnest(ARRAY[false,true]) ip""",
    """INSERT INTO plan_prices (plan_id, hourly_price, effective_at, created_at)
       SELECT id, 0.010000 + id * 0.013457, '2026-01-01', now() FROM plans""",
    # 3 deployments per customer
    """INSERT INTO deployments (external_id, customer_id, name, plan_id, plan_name, hourly_price, state,
                                created_at, last_event_at)
       SELECT 'd' || g, (g % :customers) + 1, 'deployment-' || g, p.id, p.name, pp.hourly_price,
              CASE WHEN g % 10 = 9 THEN 'failed' WHEN g % 3 = 1 THEN 'deleted' WHEN g % 3 = 0 THEN 'running'
                   ELSE 'suspended' END,
              timestamptz '2026-09-20' + (g % 20000) * interval '97 seconds',
              timestamptz '2026-09-20' + (g % 20000) * interval '97 seconds'
       FROM generate_series(1, :deployments) g
       JOIN plans p ON p.id = (g % 12) + 1 JOIN plan_prices pp ON pp.plan_id = p.id""",
]

EVENTS = """
INSERT INTO deployment_events (event_id, deployment_id, kind, occurred_at, received_at)
SELECT 'e' || d.id || '-' || x.n, d.id, x.kind, d.created_at + x.offset_s * interval '1 second', now()
FROM deployments d
CROSS JOIN LATERAL (
    SELECT * FROM (VALUES
        (1, 'created', 0, true),
        (2, CASE WHEN d.id % 10 = 9 THEN 'failed' ELSE 'succeeded' END, 60, true),
        (3, 'suspended', 2 * 86400 + d.id % 7200, d.id % 3 = 0 AND d.id % 10 <> 9),
        (4, 'resumed', 3 * 86400 + d.id % 3600, d.id % 3 = 0 AND d.id % 10 <> 9),
        (5, 'deleted', 12 * 86400 + d.id % 86400, d.id % 3 = 1),
        (6, 'suspended', 15 * 86400 + d.id % 5000, d.id % 3 = 2 AND d.id % 10 <> 9)
    ) AS v(n, kind, offset_s, wanted) WHERE wanted
) x
"""

# rows of the generated data whose foreign key has no target (must be 0)
ORPHANS = """
SELECT (SELECT count(*) FROM deployments d WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = d.customer_id))
     + (SELECT count(*) FROM deployments d WHERE NOT EXISTS (SELECT 1 FROM plans p WHERE p.id = d.plan_id))
     + (SELECT count(*) FROM plan_prices pp WHERE NOT EXISTS (SELECT 1 FROM plans p WHERE p.id = pp.plan_id))
     + (SELECT count(*) FROM deployment_events e
        WHERE NOT EXISTS (SELECT 1 FROM deployments d WHERE d.id = e.deployment_id))
"""

# every row a run can create
CREATED = """
SELECT (SELECT count(*) FROM invoices) + (SELECT count(*) FROM invoice_lines)
     + (SELECT count(*) FROM settlement_requests) + (SELECT count(*) FROM notifications)
"""

# numbers 1..n, each once, in customer order
GAPLESS = """
SELECT count(*) = count(DISTINCT number_seq) AND min(number_seq) = 1 AND max(number_seq) = count(*)
       AND bool_and(number = number_year || '-' || lpad(number_seq::text, 6, '0'))
       AND (SELECT bool_and(ordered) FROM (
               SELECT number_seq = row_number() OVER (ORDER BY customer_id) AS ordered FROM invoices) o)
FROM invoices
"""

FLOOR = """
INSERT INTO floor_lines (invoice_id, position, description, plan_name, deployment_id, seconds, hourly_price,
                         amount_cents)
SELECT g, 0, 'deployment-' || g, 'vm-small', g, 3600 + g % 1000, 0.023457, g % 5000
FROM generate_series(1, :lines) g
"""


def backend_times(pid: int) -> tuple[float, float] | None:
    """(CPU seconds, run-queue wait seconds) of a local PostgreSQL backend, None if not readable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        runq = int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
        return cpu, runq
    except (OSError, ValueError, IndexError):
        return None


def spent(before: tuple[float, float] | None, after: tuple[float, float] | None) -> tuple[float, float] | None:
    return (after[0] - before[0], after[1] - before[1]) if before and after else None


def describe(times: tuple[float, float] | None) -> str:
    return f" server_cpu_s={times[0]:.2f} waiting_for_cpu_s={times[1]:.2f}" if times else ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--database-url", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/paydesk_bench_usage"))
    args = parser.parse_args()
    customers, deployments = args.customers, args.customers * 3

    recreate(args.database_url)
    from app.migrate import upgrade_database

    upgrade_database(args.database_url)
    os.environ.update(DATABASE_URL=args.database_url, JOBS_MODE="inline", VAT_RATE="0.19")
    os.environ.setdefault("SECRET_KEY", "bench-only-secret")  # create_app refuses to start without one
    os.environ.pop("REDIS_URL", None)
    from app import create_app
    from app.billing.monthly import issue_monthly_invoices_bulk
    from app.extensions import db

    app = create_app()
    engine = app.extensions["paydesk_engine"]
    started = time.perf_counter()
    with engine.begin() as conn:
        # bulk load of generated rows: row-by-row foreign-key triggers off for this transaction only
        # (they would take most of the generation time at 10× scale); checked set-based below
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        for statement in GENERATE:
            conn.execute(text(statement), {"customers": customers, "deployments": deployments})
        conn.execute(text(EVENTS))
        conn.execute(text("SET LOCAL session_replication_role = origin"))
        orphans = conn.execute(text(ORPHANS)).scalar_one()
        if orphans:
            raise SystemExit(f"generated data breaks {orphans} foreign keys")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
        events = conn.execute(text("SELECT count(*) FROM deployment_events")).scalar_one()
        conn.execute(text("CHECKPOINT"))
    print(f"generated customers={customers} deployments={deployments} events={events} "
          f"in {time.perf_counter() - started:.1f}s", flush=True)

    with app.app_context():
        session = db.new_session()
        # the job's transaction starts here, so this is the backend that runs the whole job
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        before = backend_times(pid)
        t0 = time.perf_counter()
        report = issue_monthly_invoices_bulk(session, PERIOD)
        job_seconds = time.perf_counter() - t0
        job_times = spent(before, backend_times(pid))
        session.close()
        with engine.connect() as conn:
            written = conn.execute(text(CREATED)).scalar_one()
        t0 = time.perf_counter()
        again_session = db.new_session()
        again = issue_monthly_invoices_bulk(again_session, PERIOD)
        rerun_seconds = time.perf_counter() - t0
        again_session.close()

    with engine.connect() as conn:
        rerun_created = conn.execute(text(CREATED)).scalar_one() - written
        gapless = conn.execute(text(GAPLESS)).scalar_one()
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE floor_lines (LIKE invoice_lines INCLUDING ALL)"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("CHECKPOINT"))
    with engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        conn.commit()
        before = backend_times(pid)
        t0 = time.perf_counter()
        with conn.begin():
            conn.execute(text(FLOOR), {"lines": report.lines})
        floor_seconds = time.perf_counter() - t0
        floor_times = spent(before, backend_times(pid))

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"job: invoices={report.invoices} lines={report.lines} rows_written={written} seconds={job_seconds:.2f}"
          + describe(job_times))
    print(f"re-run: invoices={again.invoices} rows_created={rerun_created} seconds={rerun_seconds:.2f}; "
          f"numbers gapless and in customer order={gapless}")
    print(f"floor: INSERT ... SELECT of {report.lines} lines seconds={floor_seconds:.2f}" + describe(floor_times))
    cpu_ratio = f" cpu_ratio={job_times[0] / floor_times[0]:.1f}" if job_times and floor_times else ""
    print(
        f"bench monthly: customers={customers} invoices={report.invoices} seconds={job_seconds:.1f} "
        f"rows_per_s={written / job_seconds:.0f} floor_s={floor_seconds:.1f} ratio={job_seconds / floor_seconds:.1f} "
        f"peak_rss_mb={peak_rss_mb:.0f} rerun_s={rerun_seconds:.1f} rerun_created={rerun_created} "
        f"gapless={'yes' if gapless else 'no'}" + cpu_ratio
    )
    engine.dispose()


if __name__ == "__main__":
    main()
