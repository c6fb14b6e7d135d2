"""What one funds arrival costs: `settle_customer_job` for a lone customer and the worker around it
(the settlement queue runs in the worker process), against real PostgreSQL and Redis."""

import signal
import threading
from contextlib import contextmanager

import pytest
from redis import Redis
from rq import Callback, Queue, get_current_job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from sqlalchemy import event, select, text

import app.billing.settlement as settlement
from app.models import Invoice, SettlementRequest
from jobs.queue import SETTLEMENT_QUEUE, WORKER_QUEUES
from jobs.settlement import DRAIN_MIN, settle_customer_job
from tests.money_support import assert_money_invariants, credit, make_invoice

pytestmark = pytest.mark.integration


@contextmanager
def counted_statements(engine):
    """Statements and commits sent on `engine` inside the block."""
    counts = {"statements": 0, "commits": 0}

    def on_statement(*_args):
        counts["statements"] += 1

    def on_commit(_conn):
        counts["commits"] += 1

    event.listen(engine, "before_cursor_execute", on_statement)
    event.listen(engine, "commit", on_commit)
    try:
        yield counts
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
        event.remove(engine, "commit", on_commit)


def hold_lock(conn, customer_id: int) -> None:
    """Take the customer's settlement lock in `conn`'s transaction (released by its rollback)."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:k, :c)"), {"k": settlement.SETTLEMENT_LOCK_CLASS, "c": customer_id})


def funded_customer(session, factory, *amounts_cents):
    """A customer with open invoices, exactly enough cash for them and a waiting request."""
    customer = factory.customer()
    invoices = [make_invoice(session, customer.id, amount) for amount in amounts_cents]
    credit(session, customer.id, "cash", sum(amounts_cents))
    assert session.get(SettlementRequest, customer.id) is not None
    return customer, invoices


def test_a_lone_customer_paid_from_cash_is_one_commit_of_at_most_eleven_statements(app, session, factory):
    customer, invoices = funded_customer(session, factory, 300, 500)

    with counted_statements(app.extensions["paydesk_engine"]) as counts:
        result = settle_customer_job(customer.id)

    assert result["payments"] == 2 and sorted(result["paid_invoices"]) == sorted(i.id for i in invoices)
    assert result["drained"] == 0
    # lock-if-requested, state and balances, invoices, per invoice a ledger entry and a receipt,
    # the payments, the invoices, the request, the deletion-mark check
    assert counts["statements"] <= 11 and counts["commits"] == 1, counts
    session.expire_all()
    assert session.get(SettlementRequest, customer.id) is None
    assert all(session.get(Invoice, i.id).state == "paid" for i in invoices)
    assert_money_invariants(session, customer.id)


def test_a_job_whose_request_is_gone_sends_one_statement_and_does_not_wait_for_the_lock(
    app, session, factory, monkeypatch
):
    customer, invoices = funded_customer(session, factory, 400)
    settle_customer_job(customer.id)  # the first job settles; a duplicate one follows
    monkeypatch.setattr(settlement, "LOCK_WAIT_SECONDS", 1)
    engine = app.extensions["paydesk_engine"]

    with engine.connect() as holder:  # another settlement of this customer holds its lock
        hold_lock(holder, customer.id)
        with counted_statements(engine) as counts:
            result = settle_customer_job(customer.id)
        holder.rollback()

    assert result["busy"] is False and result["rounds"] == 0 and result["payments"] == 0
    assert counts == {"statements": 1, "commits": 0}


def test_a_job_whose_customer_is_being_settled_waits_for_the_lock(app, session, factory, monkeypatch):
    customer, invoices = funded_customer(session, factory, 400)
    monkeypatch.setattr(settlement, "LOCK_WAIT_SECONDS", 1)
    engine = app.extensions["paydesk_engine"]

    with engine.connect() as holder:
        hold_lock(holder, customer.id)
        busy = settle_customer_job(customer.id)
        holder.rollback()
    settled = settle_customer_job(customer.id)

    assert busy["busy"] is True and busy["payments"] == 0
    assert settled["payments"] == 1 and settled["paid_invoices"] == [invoices[0].id]
    assert_money_invariants(session, customer.id)


def test_a_job_reports_the_requests_waiting_behind_it_oldest_first(app, session, factory):
    first, invoices = funded_customer(session, factory, 250)
    for n in range(4):
        funded_customer(session, factory, 100 + n)
    waiting_order = list(session.scalars(
        select(SettlementRequest.customer_id).where(SettlementRequest.customer_id != first.id)
        .order_by(SettlementRequest.requested_at)
    ))

    report = settlement.settle_customer(session, first.id, only_if_requested=True, waiting_limit=3)

    assert report.waiting == waiting_order[:3] and report.paid_invoice_ids == [invoices[0].id]


def test_fewer_waiting_requests_than_drain_min_are_left_to_their_own_jobs(app, session, factory):
    first, _ = funded_customer(session, factory, 250)
    others = [funded_customer(session, factory, 100 + n)[0].id for n in range(DRAIN_MIN - 1)]

    result = settle_customer_job(first.id)

    assert result["payments"] == 1 and result["drained"] == 0
    session.expire_all()
    assert sorted(session.scalars(select(SettlementRequest.customer_id))) == sorted(others)


def test_a_burst_of_requests_is_drained_by_one_job(app, session, factory):
    customers = [funded_customer(session, factory, 200 + n, 900) for n in range(DRAIN_MIN + 2)]

    result = settle_customer_job(customers[0][0].id)

    assert result["payments"] == 2 and result["drained"] == DRAIN_MIN + 1
    session.expire_all()
    assert session.scalar(select(SettlementRequest.customer_id)) is None
    for customer, invoices in customers:
        assert all(session.get(Invoice, i.id).state == "paid" for i in invoices)
        assert_money_invariants(session, customer.id)


# ------------------------------------------------------------- the worker ---
_seen: list[tuple[int, int]] = []  # (Redis round trips so far, worker key TTL) when each job started
_round_trips = {"n": 0}
_lock = threading.Lock()


def note_round_trips(value: int) -> int:
    """A settlement-queue job (run in the worker process): when it ran, and what the worker key holds."""
    job = get_current_job()
    ttl = job.connection.ttl(f"rq:worker:{job.worker_name}")
    with _lock:
        _seen.append((_round_trips["n"], ttl))
    return value * 2


def fail_on_purpose() -> None:
    raise RuntimeError("this job fails")


def remember_success(job, connection, result, *args, **kwargs) -> None:
    connection.set(f"test-callback:{job.id}", result)


def test_in_process_jobs_keep_rqs_bookkeeping_in_few_round_trips(app, redis_url, monkeypatch):
    import redis.client

    from jobs.worker import PaydeskWorker

    connection = Redis.from_url(redis_url)
    queue = Queue(SETTLEMENT_QUEUE, connection=connection)
    jobs = [queue.enqueue(note_round_trips, n, job_timeout=180) for n in range(6)]
    failing = queue.enqueue(fail_on_purpose)
    with_callback = queue.enqueue(note_round_trips, 21, on_success=Callback(remember_success))
    worker = PaydeskWorker(list(WORKER_QUEUES), connection=connection)

    def counting(original):
        def call(self, *args, **kwargs):
            _round_trips["n"] += 1
            return original(self, *args, **kwargs)
        return call

    # every Redis round trip: a command, a pipeline, a command sent at once by a watching pipeline
    monkeypatch.setattr(Redis, "execute_command", counting(Redis.execute_command))
    monkeypatch.setattr(redis.client.Pipeline, "execute", counting(redis.client.Pipeline.execute))
    monkeypatch.setattr(redis.client.Pipeline, "immediate_execute_command",
                        counting(redis.client.Pipeline.immediate_execute_command))
    _seen.clear()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.work(burst=True)
    finally:
        for sig, handler in handlers.items():  # RQ installs its own
            signal.signal(sig, handler)

    for n, job in enumerate(jobs):
        job.refresh()
        assert job.get_status() == "finished" and job.return_value() == n * 2
        assert job.worker_name == worker.name and job.started_at <= job.ended_at
    failing.refresh()
    assert failing.get_status() == "failed" and "this job fails" in failing.latest_result().exc_string
    with_callback.refresh()
    assert with_callback.get_status() == "finished" and connection.get(f"test-callback:{with_callback.id}") == b"42"
    assert StartedJobRegistry(queue=queue).count == 0
    assert set(FinishedJobRegistry(queue=queue).get_job_ids()) == {job.id for job in jobs} | {with_callback.id}
    assert FailedJobRegistry(queue=queue).get_job_ids() == [failing.id]
    assert worker.executions == {}
    # a job's worker key outlives its timeout; from one job to the next (the job's own TTL read
    # included) RQ itself took 23 round trips
    assert len(_seen) == 7 and all(ttl > 180 for _trips, ttl in _seen[:6]), _seen
    trips = [n for n, _ttl in _seen[:6]]
    per_job = [later - earlier for earlier, later in zip(trips, trips[1:], strict=False)]
    assert max(per_job) <= 10, per_job
