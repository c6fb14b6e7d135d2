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

RQ's bookkeeping around a job is about 22 Redis round trips (the worker heartbeat alone is three
commands, sent three times per loop, and the idle state is written twice); for a job of a few
milliseconds they cost as much as the job. This class sends the same writes in fewer trips: a
heartbeat is one pipeline and is not repeated when one with the same expiry went out less than a
second ago, a state Redis already holds is not written again, an in-process job's two preparation
pipelines (RQ's `prepare_execution`, then `prepare_job_execution`) are one, and a job without
callbacks is not heartbeaten between its end and the pipeline recording that end. Redis ends up
holding what RQ writes (the worker key's expiry may trail by under a second).
"""

import ctypes
import os
import signal
import sys
import time

from rq.defaults import DEFAULT_WORKER_TTL
from rq.executions import Execution
from rq.utils import now
from rq.worker import Worker, WorkerStatus

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
HEARTBEAT_SLACK_SECONDS = 1.0  # a heartbeat that would extend the worker key's expiry by less is not sent
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

        self._state_in_redis: str | None = None  # the state this worker last wrote outside a pipeline
        self._heartbeat_expires_at = 0.0  # monotonic time the worker key expires, as last set outside a pipeline
        self._prepared_job_id: str | None = None
        os.register_at_fork(before=_remember_forking_parent, after_in_child=_die_with_parent)
        warm_up()

    def set_state(self, state, pipeline=None):
        """RQ's, without writing a state Redis already holds (RQ writes `idle` twice per job)."""
        if pipeline is None and state == self._state_in_redis:
            self._state = state
            return
        super().set_state(state, pipeline=pipeline)
        # a pipeline's write is only known once it executes: the next direct write goes out
        self._state_in_redis = state if pipeline is None else None

    def heartbeat(self, timeout=None, pipeline=None):
        """RQ's heartbeat (three commands) in one round trip; skipped when one with the same expiry
        went out less than HEARTBEAT_SLACK_SECONDS ago (RQ sends three per job)."""
        ttl = timeout or self.worker_ttl + 60
        if pipeline is not None:
            super().heartbeat(ttl, pipeline=pipeline)
            # whether or not the pipeline executes, the key expires no earlier than the lower of both
            self._heartbeat_expires_at = min(self._heartbeat_expires_at, time.monotonic() + ttl)
            return
        if self._heartbeat_expires_at >= time.monotonic() + ttl - HEARTBEAT_SLACK_SECONDS:
            return
        self._write_state_and_heartbeat(self._state, ttl)

    def _write_state_and_heartbeat(self, state: str, ttl: int) -> None:
        with self.connection.pipeline(transaction=False) as own:
            if state != self._state_in_redis:
                super().set_state(state, pipeline=own)
            super().heartbeat(ttl, pipeline=own)
            own.execute()
        self._state, self._state_in_redis = state, state
        self._heartbeat_expires_at = time.monotonic() + ttl

    def execute_job(self, job, queue):
        from jobs.queue import IN_PROCESS_QUEUES

        if queue.name not in IN_PROCESS_QUEUES:
            super().execute_job(job, queue)
            return
        # SimpleWorker.execute_job: perform the job here, without a work-horse
        execution = self._prepare_in_process(job, queue)
        self.perform_job(job, queue, execution)
        self._write_state_and_heartbeat(WorkerStatus.IDLE, self.worker_ttl + 60)  # what the loop sends next

    def _prepare_in_process(self, job, queue) -> Execution:
        """RQ's `prepare_execution` (the worker's side) and `prepare_job_execution` (the horse's),
        the same writes in one pipeline: an in-process job has no horse to wait for."""
        heartbeat_ttl = self.get_heartbeat_ttl(job)
        with self.connection.pipeline() as pipeline:
            execution = Execution.create(job, heartbeat_ttl, pipeline=pipeline, worker_name=self.name)
            self.executions[execution.id] = execution
            self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
            self.heartbeat(heartbeat_ttl, pipeline=pipeline)
            job.heartbeat(now(), heartbeat_ttl, pipeline=pipeline)
            job.prepare_for_execution(self.name, pipeline=pipeline)
            pipeline.persist(job.key)
            if len(self.queues) == 1:  # dequeued through the intermediate queue (as perform_job decides)
                pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
            pipeline.execute()
        self._prepared_job_id = job.id
        return execution

    def prepare_job_execution(self, job, remove_from_intermediate_queue: bool = False) -> None:
        if self._prepared_job_id is not None and self._prepared_job_id == job.id:
            self._prepared_job_id = None
            self.procline(f"Processing {job.func_name} from {job.origin} since {time.time()}")
            return
        super().prepare_job_execution(job, remove_from_intermediate_queue)

    def handle_execution_ended(self, job, queue, heartbeat_ttl):
        """RQ heartbeats the job here so that it stays alive while its callbacks run; an in-process
        job without callbacks goes straight to the pipeline that records its end (which saves the
        job, heartbeat included)."""
        from jobs.queue import IN_PROCESS_QUEUES

        callbacks = ("_success_callback_name", "_failure_callback_name", "_stopped_callback_name")
        if job.origin not in IN_PROCESS_QUEUES or any(getattr(job, name, None) for name in callbacks):
            super().handle_execution_ended(job, queue, heartbeat_ttl)
            return
        job.ended_at = now()
        job.last_heartbeat = job.ended_at

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
