"""Enqueueing jobs: RQ on Redis in production, a background thread in the embedded default.

Enqueueing never raises into the caller: a request that already committed money must succeed even
when Redis is down (the outbox sweeps cover what is lost). Job functions take ids, never ORM objects.
"""

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from flask import current_app, has_app_context
from redis import Redis
from rq import Queue

log = logging.getLogger(__name__)
QUEUE_NAME = "paydesk"
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


def get_queue() -> Queue:
    return Queue(QUEUE_NAME, connection=redis_connection())


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


def enqueue(func, *args, job_id: str | None = None, **options) -> bool:
    """Enqueue `func(*args)`. Returns False (and logs) when the queue cannot be reached."""
    if _config("JOBS_MODE") == "inline":
        _inline(func, *args)
        return True
    try:
        get_queue().enqueue(func, *args, job_id=job_id, **options)
        return True
    except Exception:
        log.warning("could not enqueue %s%r; a periodic sweep will catch up", func.__name__, args, exc_info=True)
        return False


def enqueue_settlement(customer_id: int) -> bool:
    from jobs.settlement import settle_customer_job

    return enqueue(settle_customer_job, customer_id)
