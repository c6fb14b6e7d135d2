"""A worker killed outright takes every child it forked with it (README "Production processes").

RQ puts each work-horse in a process group of its own, so signalling the worker's group does not
reach it; `jobs.worker.PaydeskWorker` asks Linux to kill its children when it dies (PR_SET_PDEATHSIG).
"""

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue

from jobs.queue import QUEUE_NAME

pytestmark = pytest.mark.integration


def hold_the_horse(key: str, seconds: float = 60.0) -> None:
    """A job that says which process runs it, then keeps its work-horse busy."""
    from jobs.runtime import app_config

    Redis.from_url(app_config("REDIS_URL")).set(key, os.getpid())
    threading.Event().wait(seconds)


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(condition, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)  # polling interval of the bounded wait
    return condition()


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads processes from /proc (Linux)")
def test_a_worker_killed_outright_takes_its_work_horse_and_scheduler_with_it(worker, redis_url):
    redis = Redis.from_url(redis_url)
    Queue(QUEUE_NAME, connection=redis).enqueue(hold_the_horse, "horse-pid", job_timeout=120)
    command = worker.command(burst=False)
    command.insert(command.index("worker") + 1, "--with-scheduler")  # the production command
    proc = subprocess.Popen(command, env=worker.env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        horse = int(_wait_for(lambda: redis.get("horse-pid"), 60) or 0)
        assert horse, "the job never started"
        children = _children(proc.pid)
        assert horse in children and horse != proc.pid
        os.kill(proc.pid, signal.SIGKILL)  # the worker alone, as an OOM kill or a crash would
        proc.wait(timeout=10)
        assert _wait_for(lambda: not any(_alive(pid) for pid in children), 10), (
            f"children {[pid for pid in children if _alive(pid)]} outlived their worker")
    finally:
        worker.kill(proc)
        for pid in _children(proc.pid) | {int(redis.get("horse-pid") or 0)} - {0}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
