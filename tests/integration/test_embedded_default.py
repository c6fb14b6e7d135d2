"""The quick-start command `bin/dev` on a fresh SQLite file: it serves the portal and prints
the demo logins, and the demo customer can log in."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, csrf_token_from, free_port

pytestmark = pytest.mark.integration


def test_bin_dev_serves_the_portal_and_the_demo_customer_can_log_in(tmp_path: Path):
    port, stripe_port = free_port(), free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "STRIPE_PORT": str(stripe_port),
        "DATABASE_URL": f"sqlite:///{tmp_path}/paydesk.sqlite3",
        "BASE_URL": "",
        "STRIPE_API_BASE": "",
        "JOBS_MODE": "",
        "REDIS_URL": "",
        "RATELIMIT_STORAGE_URI": "",
        "MAIL_BACKEND": "console",
        "SECRET_KEY": "",
    }
    proc = subprocess.Popen(
        [str(ROOT / "bin" / "dev")], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )
    output = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            output.append(line)
            if line.startswith("Stripe emulator"):
                break
        text = "".join(output)
        assert f"Paydesk is running at http://127.0.0.1:{port}" in text, text[-3000:]
        email, password = re.search(r"customer: (\S+) / (\S+)", text).groups()

        base = f"http://127.0.0.1:{port}"
        http = requests.Session()
        for _ in range(100):
            try:
                page = http.get(f"{base}/login", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        token = csrf_token_from(page.text)
        response = http.post(f"{base}/login", data={"email": email, "password": password, "csrf_token": token})
        assert response.status_code == 200 and response.url.endswith("/dashboard"), response.text[:3000]
        assert email in response.text
        health = http.get(f"{base}/healthz").json()
        assert health["checks"]["database"] == "ok"
        # the signing key is random, kept in instance/ for the owner only, never derived from the host
        secret_file = ROOT / "instance" / "secret_key"
        assert secret_file.stat().st_mode & 0o077 == 0
        assert len(secret_file.read_text().strip()) == 64
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
