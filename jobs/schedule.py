"""Periodic jobs, in one place.

Production: `rq cron jobs/cron_config.py` enqueues them, each on its queue (and `rq worker` runs
them). The settlement sweep runs every 5 s on the recovery queue, which workers take first: after a
worker is killed, whatever it left (a lost job, a charge left `pending`) is settled within seconds of
a worker being free, never behind a backlog of per-customer jobs; its queue TTL drops sweeps that
waited longer than two intervals for a worker (a newer one is queued anyway).
Embedded default: `start_inline_scheduler(app)` runs them in a background thread.
Every periodic job is safe to run at any frequency and concurrently with itself.
"""

import importlib
import logging
import threading
import time
from dataclasses import dataclass

from jobs.queue import QUEUE_NAME, RECOVERY_QUEUE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Periodic:
    name: str
    func_path: str  # "module.function"
    interval: int | None = None  # seconds
    cron: str | None = None  # UTC cron expression
    queue: str = QUEUE_NAME
    ttl: int | None = None  # seconds a run may wait in its queue before it is dropped

    def resolve(self):
        module, _, name = self.func_path.rpartition(".")
        return getattr(importlib.import_module(module), name)


PERIODIC = [
    Periodic("settlement-sweep", "jobs.settlement.sweep_settlement_requests", interval=5,
             queue=RECOVERY_QUEUE, ttl=10),
    Periodic("card-topups-redrive", "jobs.topups.redrive_card_topups", interval=60),
    Periodic("stripe-events-reconcile", "jobs.stripe_events.reconcile_stripe_events", interval=300),
    Periodic("monthly-invoices", "jobs.invoicing.issue_monthly_invoices", cron="5 0 1 * *"),
    Periodic("dunning", "jobs.dunning.run_dunning", interval=3600),
    Periodic("notifications-sweep", "jobs.notifications.sweep_notifications", interval=60),
    Periodic("spending-limits", "jobs.foresight.check_spending_limits", interval=900),
]


def start_inline_scheduler(app, tick_seconds: float = 1.0) -> threading.Thread:
    """Embedded default only: run interval jobs in a daemon thread, cron jobs when due (checked each tick).
    The tick is short so that the settlement sweep keeps its 5-second interval here too."""
    from croniter import croniter

    from app.models.base import utcnow

    next_run: dict[str, float] = {}
    cron_next = {p.name: croniter(p.cron, utcnow()).get_next(float) for p in PERIODIC if p.cron}

    def loop():
        while True:
            now = time.time()
            for periodic in PERIODIC:
                due = cron_next.get(periodic.name) if periodic.cron else next_run.get(periodic.name, now)
                if now < due:
                    continue
                if periodic.cron:
                    cron_next[periodic.name] = croniter(periodic.cron, utcnow()).get_next(float)
                else:
                    next_run[periodic.name] = now + periodic.interval
                try:
                    func = periodic.resolve()
                    with app.app_context():
                        func()
                except Exception:
                    log.exception("periodic job %s failed", periodic.name)
            time.sleep(tick_seconds)

    thread = threading.Thread(target=loop, name="paydesk-scheduler", daemon=True)
    thread.start()
    return thread
