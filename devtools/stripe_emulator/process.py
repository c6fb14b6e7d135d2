"""Start/stop the Stripe emulator as a child process (for test fixtures and the dev run script).

    em = start_emulator()
    client = stripe.StripeClient("sk_test_x", base_addresses={"api": em.api_base})
    ...
    em.stop()
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

REPO_ROOT = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"stripe emulator listening on (\S+)")


class EmulatorError(RuntimeError):
    pass


class EmulatorProcess:
    """A running emulator (front service + its localstripe child) in its own process group."""

    def __init__(self, proc: subprocess.Popen, api_base: str) -> None:
        self.proc = proc
        self.api_base = api_base.rstrip("/")
        self._stopped = False
        atexit.register(self.stop)

    # -- lifecycle -----------------------------------------------------------------------------------------

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        # the emulator's localstripe child shares the process group: make sure nothing survives
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.proc.stdout is not None:
            with contextlib.suppress(Exception):
                self.proc.stdout.close()
        atexit.unregister(self.stop)

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control API -----------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, data: bytes | None = None,
              content_type: str | None = None) -> bytes:
        req = urllib.request.Request(self.api_base + path, data=data, method=method)
        if content_type:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            raise EmulatorError(f"{method} {path} -> {exc.code}: {exc.read()[:500]!r}") from exc

    def health(self) -> dict:
        return json.loads(self._call("GET", "/_emulator/health"))

    def reset(self) -> None:
        """Wipe localstripe's data and the emulator's own state (sessions, events, idempotency cache,
        faults, webhook registrations)."""
        self._call("DELETE", "/_config/data")

    def add_webhook(self, url: str, secret: str, events: list[str] | None = None,
                    name: str = "paydesk") -> None:
        fields: list[tuple[str, str]] = [("url", url), ("secret", secret)]
        fields += [("events[]", e) for e in events or []]
        self._call("POST", f"/_config/webhooks/{name}", urlencode(fields).encode(),
                   "application/x-www-form-urlencoded")

    def set_fault(self, path_prefix: str, mode: str, count: int = 1, method: str = "POST",
                  delay: float = 30) -> None:
        body = json.dumps({"path_prefix": path_prefix, "mode": mode, "count": count, "method": method,
                           "delay": delay}).encode()
        self._call("POST", "/_emulator/faults", body, "application/json")

    def clear_faults(self) -> None:
        self._call("DELETE", "/_emulator/faults")

    def faults(self) -> list[dict]:
        """The faults still armed: one is gone once as many requests as its count have met it."""
        return json.loads(self._call("GET", "/_emulator/faults"))["faults"]

    def deliveries(self) -> list[dict]:
        """The emulator's own webhook deliveries (checkout.session.* events), for debugging."""
        return json.loads(self._call("GET", "/_emulator/deliveries"))["deliveries"]


def _drain(stream, lines: queue.Queue) -> None:
    for raw in iter(stream.readline, b""):
        lines.put(raw.decode(errors="replace"))
    lines.put(None)


def start_emulator(port: int | None = None, host: str = "127.0.0.1", *, public_url: str | None = None,
                   timeout: float = 20.0, verbose: bool = False) -> EmulatorProcess:
    """Start ``python -m devtools.stripe_emulator`` (free port when ``port`` is None) and wait until its
    health endpoint answers. Raises :class:`EmulatorError` if it does not come up within ``timeout``."""
    cmd = [sys.executable, "-m", "devtools.stripe_emulator", "--host", host, "--port", str(port or 0)]
    if public_url:
        cmd += ["--public-url", public_url]
    if verbose:
        cmd.append("--verbose")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_drain, args=(proc.stdout, lines), daemon=True).start()
    deadline = time.monotonic() + timeout
    api_base = None
    output: list[str] = []
    try:
        while api_base is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EmulatorError(f"Stripe emulator did not come up within {timeout:.0f} s: "
                                    f"{''.join(output)[-2000:]}")
            try:
                line = lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if line is None:
                proc.wait(5)
                raise EmulatorError(f"Stripe emulator exited with code {proc.returncode} before it was "
                                    f"ready (see stderr): {''.join(output)[-2000:]}")
            output.append(line)
            m = _LISTENING.search(line)
            if m:
                api_base = m.group(1)
        em = EmulatorProcess(proc, api_base)
        while True:
            try:
                if em.health().get("status") == "ok":
                    return em
            except (EmulatorError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                em.stop()
                raise EmulatorError(f"Stripe emulator at {api_base} is not healthy after {timeout:.0f} s")
            time.sleep(0.1)
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise
