"""`rq worker -w jobs.worker.PaydeskWorker paydesk-recovery paydesk-settlement paydesk`: the worker
class production and tests run.

RQ's default worker forks a fresh work-horse per job. Without help, every horse would import the
application and build the Flask app again (about two seconds here: reportlab, the Stripe SDK,
templates). This class builds the app once in the parent, so horses start warm; each horse then
drops the database connections it inherited, as SQLAlchemy requires after fork().

Settlement jobs (the `paydesk-settlement` and `paydesk-recovery` queues, `jobs.queue.IN_PROCESS_QUEUES`)
are not worth a fork: a few milliseconds of SQL each, where the fork and its bookkeeping cost more
than the work. They run in the worker process itself, like RQ's SimpleWorker (same job timeout, by
SIGALRM). Every child the worker forks is killed with it (PR_SET_PDEATHSIG), so no work-horse or
scheduler outlives a killed worker. Nothing about their safety rests on the fork: a settlement killed mid-run loses nothing
(its transaction rolls back, its advisory lock dies with its connection, the outbox row stays for
the sweep), whether the process killed is a horse or the worker.
"""

import ctypes
import os
import signal
import sys

from rq.defaults import DEFAULT_WORKER_TTL
from rq.worker import Worker, WorkerStatus

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_forking_parent_pid: int | None = None


def _remember_forking_parent() -> None:
    global _forking_parent_pid
    _forking_parent_pid = os.getpid()


def _die_with_parent() -> None:
    """In every child the worker forks (each work-horse, the `--with-scheduler` scheduler): ask Linux
    to SIGKILL it when the worker dies, however the worker dies. RQ puts each horse in a process group
    of its own (`os.setpgrp()`), so signalling the worker's group does not reach it; without this, a
    horse (or the scheduler) outlived a SIGKILLed worker and ran on, unsupervised."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if _forking_parent_pid is not None and os.getppid() != _forking_parent_pid:
        os._exit(1)  # the worker died between fork() and prctl(): it will never notice this child


class PaydeskWorker(Worker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from jobs.runtime import warm_up

        os.register_at_fork(before=_remember_forking_parent, after_in_child=_die_with_parent)
        warm_up()

    def execute_job(self, job, queue):
        from jobs.queue import IN_PROCESS_QUEUES

        if queue.name not in IN_PROCESS_QUEUES:
            super().execute_job(job, queue)
            return
        # SimpleWorker.execute_job: perform the job here, without a work-horse
        execution = self.prepare_execution(job)
        self.perform_job(job, queue, execution)
        self.set_state(WorkerStatus.IDLE)

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        """An in-process job cannot heartbeat while it runs: keep the worker alive for its whole timeout."""
        from jobs.queue import IN_PROCESS_QUEUES

        if job.origin in IN_PROCESS_QUEUES:
            return DEFAULT_WORKER_TTL if job.timeout == -1 else int(job.timeout or DEFAULT_WORKER_TTL) + 60
        return super().get_heartbeat_ttl(job, working_time)

    def unsubscribe(self):
        """RQ's own, but bounded: with redis-py 8, `PubSubWorkerThread.stop()` joins the pubsub thread
        without a timeout, and once unsubscribed that thread may sit in a 60 s wait (RQ's
        `sleep_time`) — a burst worker or a stopping one then hung up to a minute after its last job.
        The thread is a daemon: leaving it behind at exit is harmless."""
        if self.pubsub_thread:
            self.log.info("Worker %s: unsubscribing from channel %s", self.name, self.pubsub_channel_name)
            self.pubsub.unsubscribe()
            self.pubsub_thread.stop(timeout=1)
            self.pubsub.close()

    def main_work_horse(self, job, queue):
        from jobs.runtime import after_fork

        after_fork()
        super().main_work_horse(job, queue)
