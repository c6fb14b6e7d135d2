"""What the HTTP benchmarks share: a fresh database, gunicorn, a keep-alive load generator and the
ceiling page they are measured against.

The ceiling is the cheapest page a Flask application can serve on this stack: gunicorn with the
same worker settings as the app, one PostgreSQL query through a SQLAlchemy pool, one Jinja
template rendered (`bench/ceiling_app.py`). A benchmark measures it in the same run as its own
pages and prints ratios against it, so the figures say how close Paydesk is to the floor of the
stack rather than how fast the machine happened to be.
"""

import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_WORKERS = 2
GUNICORN_THREADS = int(os.environ.get("BENCH_GUNICORN_THREADS", "4"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recreate_database(database_url: str, migrate: bool = True) -> None:
    """Drop and create the benchmark's own database, then build the schema through Alembic."""
    url = make_url(database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"),
            {"d": url.database},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}"'))
        conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    admin.dispose()
    if migrate:
        from app.migrate import upgrade_database

        upgrade_database(database_url)


def start_gunicorn(app_spec: str, env: dict[str, str], port: int, health_path: str = "/healthz") -> subprocess.Popen:
    """gunicorn (2 gthread workers) serving `app_spec` on 127.0.0.1:port; returns once it answers."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    proc = subprocess.Popen(
        [gunicorn, "-w", str(GUNICORN_WORKERS), "-k", "gthread", "--threads", str(GUNICORN_THREADS),
         "-b", f"127.0.0.1:{port}", "--log-level", "warning", app_spec],
        cwd=ROOT, env=full_env, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn {app_spec} exited with {proc.returncode}")
        try:
            requests.get(f"http://127.0.0.1:{port}{health_path}", timeout=1)
            return proc
        except requests.RequestException:
            time.sleep(0.3)
    stop_gunicorn(proc)
    raise SystemExit(f"gunicorn {app_spec} did not start")


def stop_gunicorn(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


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


@dataclass
class LoadResult:
    requests: int
    elapsed_s: float
    latencies_s: list[float]
    bad_statuses: list[int]

    @property
    def per_s(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s else 0.0

    def percentile_ms(self, p: int) -> float:
        if len(self.latencies_s) < 2:
            return (self.latencies_s[0] if self.latencies_s else 0.0) * 1000
        return statistics.quantiles(self.latencies_s, n=100)[p - 1] * 1000


def run_load(port: int, requests_to_send: list[tuple[str, str, bytes | None, dict[str, str]]],
             connections: int = 8, expect: int = 200) -> LoadResult:
    """Send every (method, path, body, headers) over `connections` keep-alive connections.

    http.client with keep-alive is the cheapest client, so the generator steals little CPU from the
    server on this 2-core machine. A status other than `expect` is recorded, never retried.
    """
    latencies: list[float] = []
    bad: list[int] = []
    lock = threading.Lock()
    cursor = iter(range(len(requests_to_send)))

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine, mine_bad = [], []
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                break
            method, path, body, headers = requests_to_send[i]
            started = time.perf_counter()
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            if response.status != expect:
                mine_bad.append(response.status)
        conn.close()
        with lock:
            latencies.extend(mine)
            bad.extend(mine_bad)

    started = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(connections)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return LoadResult(len(requests_to_send), time.perf_counter() - started, latencies, bad)


def measure_ceiling(database_url: str, requests_count: int = 4000, connections: int = 8) -> LoadResult:
    """req/s and latencies of the ceiling page (`bench/ceiling_app.py`) on `database_url`
    (any database with a `users` table), under the same gunicorn settings as the app."""
    port = free_port()
    proc = start_gunicorn("bench.ceiling_app:app", {"CEILING_DATABASE_URL": database_url}, port, "/ceiling")
    try:
        run_load(port, [("GET", "/ceiling", None, {})] * 200, connections)  # warm up both workers
        return run_load(port, [("GET", "/ceiling", None, {})] * requests_count, connections)
    finally:
        stop_gunicorn(proc)
