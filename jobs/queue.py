"""Enqueueing jobs: RQ on Redis in production, a background thread in the embedded default.

Enqueueing never raises into the caller: a request that already committed money must succeed even
when Redis is down (the outbox sweeps cover what is lost). Job functions take ids, never ORM objects.

Three queues, listed to every worker in this order (RQ takes the first non-empty one, so the order is
the priority): `paydesk-recovery` (the settlement sweep: recovery never waits behind a backlog),
`paydesk-settlement` (one job per settlement request) and `paydesk` (everything else). Jobs of the
first two run inside the worker process (no fork per job, `jobs.worker.PaydeskWorker`); the rest
run in a forked work-horse.
"""

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from flask import current_app, has_app_context
from redis import Redis
from rq import Queue

log = logging.getLogger(__name__)
QUEUE_NAME = "paydesk"
SETTLEMENT_QUEUE = "paydesk-settlement"
RECOVERY_QUEUE = "paydesk-recovery"
WORKER_QUEUES = (RECOVERY_QUEUE, SETTLEMENT_QUEUE, QUEUE_NAME)  # what every worker listens to, in this order
IN_PROCESS_QUEUES = frozenset({RECOVERY_QUEUE, SETTLEMENT_QUEUE})  # short jobs run without a fork
_inline_executor: ThreadPoolExecutor | None = None
_inline_lock = threading.Lock()
_redis_clients: dict[str, Redis] = {}


def _config(key: str):
    from jobs.runtime import app_config

    return app_config(key)


def redis_connection() -> Redis:
    url = _config("REDIS_URL")
    if url not in _redis_clients:
        _redis_clients[url] = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    return _redis_clients[url]


def get_queue(name: str = QUEUE_NAME) -> Queue:
    return Queue(name, connection=redis_connection())


def _inline(func, *args, **kwargs) -> None:
    global _inline_executor
    app = current_app._get_current_object() if has_app_context() else None
    with _inline_lock:
        if _inline_executor is None:
            _inline_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paydesk-job")

    def run():
        try:
            if app is not None:
                with app.app_context():
                    func(*args, **kwargs)
            else:
                func(*args, **kwargs)
        except Exception:
            log.exception("inline job %s failed", getattr(func, "__name__", func))

    _inline_executor.submit(run)


def _queue_for_enqueue(connection: Redis, name: str) -> Queue:
    """One Queue object per connection and name, kept (enqueueing builds nothing else per call)."""
    key = (id(connection), name)
    queue = _queues.get(key)
    if queue is None or queue.connection is not connection:
        queue = _queues[key] = Queue(name, connection=connection)
    return queue


_queues: dict[tuple[int, str], Queue] = {}


def enqueue(func, *args, job_id: str | None = None, queue_name: str = QUEUE_NAME, **options) -> bool:
    """Enqueue `func(*args)` on `queue_name`. Returns False (and logs) when the queue cannot be reached."""
    return enqueue_calls([(func, args, {"job_id": job_id, "queue_name": queue_name, **options})])


def enqueue_calls(calls: list[tuple]) -> bool:
    """Enqueue every `(func, args, options)` (options as for `enqueue`) in one Redis round trip: one
    MULTI/EXEC pipeline, so all of them are enqueued or none is (RQ alone takes two round trips per
    job). Returns False (and logs) when the queue cannot be reached."""
    if _config("JOBS_MODE") == "inline":
        for func, args, _options in calls:
            _inline(func, *args)
        return True
    try:
        connection = redis_connection()
        with connection.pipeline() as pipe:
            for func, args, options in calls:
                options = dict(options)
                queue = _queue_for_enqueue(connection, options.pop("queue_name", QUEUE_NAME))
                queue.enqueue(func, *args, pipeline=pipe, **options)
            pipe.execute()
        return True
    except Exception:
        log.warning("could not enqueue %s; a periodic sweep will catch up",
                    ", ".join(f"{func.__name__}{args!r}" for func, args, _options in calls), exc_info=True)
        return False


def enqueue_settlement(customer_id: int) -> bool:
    return enqueue_calls([settlement_call(customer_id)])


def settlement_call(customer_id: int) -> tuple:
    """What `enqueue_settlement` enqueues, as a call for `enqueue_calls` (batched with other jobs)."""
    from jobs.settlement import settle_customer_job

    return settle_customer_job, (customer_id,), {"queue_name": SETTLEMENT_QUEUE}


def enqueue_settlement_sweep() -> bool:
    from jobs.settlement import sweep_settlement_requests

    return enqueue(sweep_settlement_requests, queue_name=RECOVERY_QUEUE)
