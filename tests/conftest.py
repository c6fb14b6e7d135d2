"""Shared fixtures: real PostgreSQL, Redis, RQ worker, Stripe emulator, SMTP server, live server, browser.

Environment knobs (so several suites can share one machine):
  TEST_DATABASE_URL  default postgresql+psycopg://postgres@127.0.0.1:5432/paydesk_test
  TEST_REDIS_URL     default redis://127.0.0.1:6379/1
The schema is built once per run through Alembic; every test that uses `app` starts from
empty tables and an empty Redis database.
"""

import contextvars
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEST_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/paydesk_test"
)
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/1")
WEBHOOK_SECRET = "whsec_paydesk_test_secret"
PLATFORM_TOKEN = "test-platform-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- database ---
def _recreate_database(url: str) -> None:
    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"),
            {"d": parsed.database},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}"'))
        conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def database_url() -> str:
    from app.migrate import upgrade_database

    _recreate_database(TEST_DATABASE_URL)
    upgrade_database(TEST_DATABASE_URL)
    return TEST_DATABASE_URL


def truncate_all(engine) -> None:
    with engine.begin() as conn:
        tables = [
            r[0]
            for r in conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")
            )
        ]
        if tables:
            conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))


# ------------------------------------------------------------------ services ---
@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis_lib.Redis.from_url(TEST_REDIS_URL)
    client.ping()
    return TEST_REDIS_URL


class Mailbox:
    """Messages received by the test SMTP server (email.message.EmailMessage objects)."""

    def __init__(self):
        self.messages = []
        self.lock = threading.Lock()

    def clear(self):
        with self.lock:
            self.messages.clear()

    def wait_for(self, count: int = 1, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        raise AssertionError(f"expected {count} email(s), got {len(self.messages)}")


@pytest.fixture(scope="session")
def smtp_server():
    from email import message_from_bytes, policy

    from aiosmtpd.controller import Controller

    box = Mailbox()

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            msg = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
            with box.lock:
                box.messages.append(msg)
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    controller.mailbox = box
    yield controller
    controller.stop()


@pytest.fixture(scope="session")
def stripe_emulator():
    from devtools.stripe_emulator.process import start_emulator

    emulator = start_emulator()
    yield emulator
    emulator.stop()


# ----------------------------------------------------------------------- app ---
@pytest.fixture(scope="session")
def live_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def test_env(database_url, redis_url, smtp_server, stripe_emulator, live_port) -> dict:
    """The environment the app, the live server and worker subprocesses share."""
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "JOBS_MODE": "rq",
        "SECRET_KEY": "test-secret-key",
        "BASE_URL": f"http://127.0.0.1:{live_port}",
        "STRIPE_API_KEY": "sk_test_paydesk",
        "STRIPE_API_BASE": stripe_emulator.api_base,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "MAIL_BACKEND": "smtp",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_server.port),
        "PLATFORM_API_TOKEN": PLATFORM_TOKEN,
        "RATELIMIT_STORAGE_URI": redis_url,
        "SESSION_COOKIE_SECURE": "false",
    }
    os.environ.update(env)
    return env


class IsolatedClient(FlaskClient):
    """A test client whose every request gets its own app context (and so its own `g`), as in
    production, even though the `app` fixture keeps an app context pushed for the test body."""

    def open(self, *args, **kwargs):
        return contextvars.Context().run(super().open, *args, **kwargs)


SERVER_ERRORS: list[str] = []


def _record_server_errors(sender, response, **extra):
    """Every 5xx the app answers during the suite, test client and live server alike."""
    if response.status_code >= 500:
        from flask import request

        SERVER_ERRORS.append(f"{request.method} {request.full_path} -> {response.status_code}")


@pytest.fixture(autouse=True)
def _no_server_errors(request):
    """A 5xx is a bug: the test during which the app answered one fails (unless it is marked
    `allows_5xx` with the reason it provokes one on purpose)."""
    start = len(SERVER_ERRORS)
    yield
    answered = SERVER_ERRORS[start:]
    if answered and request.node.get_closest_marker("allows_5xx") is None:
        pytest.fail("the app answered 5xx: " + "; ".join(answered[:10]), pytrace=False)


@pytest.fixture(scope="session")
def _app(test_env):
    from flask import request_finished

    from app import create_app

    application = create_app({"TESTING": True})
    application.test_client_class = IsolatedClient
    request_finished.connect(_record_server_errors, application, weak=False)
    yield application
    application.extensions["paydesk_engine"].dispose()


@pytest.fixture
def app(_app, redis_url):
    """The app with empty tables and an empty Redis database."""
    truncate_all(_app.extensions["paydesk_engine"])
    redis_lib.Redis.from_url(redis_url).flushdb()
    with _app.app_context():
        yield _app


@pytest.fixture
def session(app):
    """A database session for arranging and checking state."""
    from app.extensions import db

    s = db.new_session()
    yield s
    s.close()


@pytest.fixture
def client(app):
    return app.test_client()


def csrf_token_from(html: str) -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(
        r'"X-CSRFToken": "([^"]+)"', html
    )
    assert match, "no CSRF token on the page"
    return match.group(1)


def get_csrf(client, path: str = "/login") -> str:
    return csrf_token_from(client.get(path).get_data(as_text=True))


class Factory:
    """Test data through the real services."""

    def __init__(self, session):
        self.session = session
        self._n = 0

    def customer(self, email: str | None = None, password: str = "correct-horse-battery", **fields):
        from app import accounts

        self._n += 1
        user = accounts.create_user(self.session, email or f"customer{self._n}@example.com", password)
        for key, value in fields.items():
            setattr(user, key, value)
        self.session.commit()
        return user

    def admin(self, email: str = "root@example.com", password: str = "admin-password-1"):
        from app import accounts

        return accounts.create_user(self.session, email, password, is_admin=True)


@pytest.fixture
def factory(session) -> Factory:
    return Factory(session)


def login(client, email: str, password: str = "correct-horse-battery"):
    token = get_csrf(client, "/login")
    response = client.post("/login", data={"email": email, "password": password, "csrf_token": token})
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    return response


@pytest.fixture
def mailbox(smtp_server) -> Mailbox:
    smtp_server.mailbox.clear()
    return smtp_server.mailbox


@pytest.fixture
def stripe(app, stripe_emulator, live_port):
    """The emulator, wiped, with the live server's webhook endpoint registered."""
    stripe_emulator.reset()
    stripe_emulator.add_webhook(f"http://127.0.0.1:{live_port}/stripe/webhook", WEBHOOK_SECRET)
    yield stripe_emulator
    stripe_emulator.clear_faults()


@pytest.fixture
def quiet_stripe(app, stripe_emulator):
    """The emulator wiped, with NO webhook registered: the test decides what is delivered, when."""
    stripe_emulator.reset()
    yield stripe_emulator
    stripe_emulator.clear_faults()


# -------------------------------------------------------------------- worker ---
class Worker:
    """Runs real `rq worker` processes against the test Redis and database: the production command
    (README "Production processes"), listening to every queue in the production order."""

    def __init__(self, env: dict):
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self._track = lambda proc: None

    def command(self, burst: bool = True) -> list[str]:
        from jobs.queue import WORKER_QUEUES

        cmd = [
            str(Path(sys.executable).with_name("rq")), "worker", "--url", self.env["REDIS_URL"], "--path", str(ROOT),
            "--worker-class", "jobs.worker.PaydeskWorker",
        ]
        if burst:
            cmd.append("--burst")
        return cmd + list(WORKER_QUEUES)

    def start_cron(self) -> subprocess.Popen:
        """The production scheduler (`rq cron jobs/cron_config.py`), in its own process group."""
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("rq")), "cron", "--url", self.env["REDIS_URL"], "--path", str(ROOT),
             str(ROOT / "jobs" / "cron_config.py")],
            env=self.env, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self._track(proc)
        return proc

    def run_burst(self, timeout: float = 120) -> subprocess.CompletedProcess:
        """Process everything queued, then exit."""
        result = subprocess.run(
            self.command(), env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result

    def start(self) -> subprocess.Popen:
        """A long-running worker in its own process group (kill it with `kill`)."""
        return subprocess.Popen(
            self.command(burst=False), env=self.env, cwd=ROOT, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    @staticmethod
    def kill(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@pytest.fixture
def worker(app, test_env) -> Iterator[Worker]:
    procs: list[subprocess.Popen] = []
    w = Worker(test_env)
    original_start = w.start

    def tracked_start():
        proc = original_start()
        procs.append(proc)
        return proc

    w.start = tracked_start
    w._track = procs.append
    yield w
    for proc in procs:
        Worker.kill(proc)


# ------------------------------------------------------------- live server ---
@pytest.fixture(scope="session")
def _live_server(_app, live_port):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", live_port, _app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{live_port}"
    server.shutdown()


@pytest.fixture
def live_server(app, _live_server) -> str:
    return _live_server


# ------------------------------------------------------------------ browser ---
@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server)
    context.set_default_timeout(15_000)
    pg = context.new_page()
    yield pg
    context.close()
