"""Arrange helpers for the dunning tests: invoices through the money core, deployments through the
usage service, received mail parsing, and a scripted webhook receiver on 127.0.0.1."""

import io
import itertools
import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import time_machine

from app.billing.invoices import LineSpec, create_invoice, issue_invoice, record_bank_transfer
from app.models import Invoice

_ids = itertools.count(1)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def travel(moment: datetime):
    """Freeze in-process time at `moment` (the rq worker subprocess keeps the real clock)."""
    return time_machine.travel(moment, tick=False)


def open_invoice(session, customer, amount_cents: int, when: datetime) -> Invoice:
    """An issued (open) invoice, issued at `when`."""
    with travel(when):
        invoice = create_invoice(session, customer.id, [LineSpec(f"Service {next(_ids)}", amount_cents)],
                                 tax_rate=Decimal("0"))
        issue_invoice(session, invoice.id, now=when)
        session.commit()
    return invoice


def pay(session, invoice: Invoice, when: datetime) -> None:
    with travel(when):
        record_bank_transfer(session, invoice.id, reference="test payment")
    session.expire_all()


def run_deployment(session, customer, external_id: str, since: datetime, price="0.100000", plan_size="small"):
    """A running deployment of a plan priced `price` per hour, started at `since`."""
    from app.billing import pricing
    from app.billing.usage import record_deployment_event
    from app.models.usage import Plan, plan_name_for

    name = plan_name_for("vm", plan_size, False)
    from sqlalchemy import select

    if session.scalar(select(Plan).where(Plan.name == name)) is None:
        pricing.create_plan(session, None, kind="vm", size=plan_size, public_ip=False, hourly_price=Decimal(price),
                            effective_at=since - timedelta(days=400))
    for kind, plan in (("created", name), ("succeeded", None)):
        record_deployment_event(session, event_id=f"ev-{external_id}-{kind}", deployment_id=external_id,
                                customer_id=customer.id, kind=kind, occurred_at=since, plan=plan,
                                name=f"deployment {external_id}" if kind == "created" else None)


def pdf_attachments(message) -> dict[str, str]:
    """filename -> extracted text of each PDF attachment."""
    from pypdf import PdfReader

    result = {}
    for part in message.iter_attachments():
        assert part.get_content_type() == "application/pdf"
        data = part.get_content()
        assert data[:5] == b"%PDF-"
        result[part.get_filename()] = "\n".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages)
    return result


def plain_text(message) -> str:
    return message.get_body(("plain",)).get_content()


class Receiver:
    """An HTTP endpoint answering with scripted status codes (the last one repeats)."""

    def __init__(self, statuses=(200,)):
        self.statuses = list(statuses)
        self.requests: list[tuple[dict, bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests.append((dict(self.headers), body))
                    status = receiver.statuses[min(len(receiver.requests), len(receiver.statuses)) - 1]
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"boom")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/paydesk-events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[dict]:
        return [json.loads(body) for _, body in self.requests]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def platform_receiver(app, worker):
    """A receiver configured as PLATFORM_WEBHOOK_URL for the app and the worker subprocess."""
    receiver = Receiver()
    saved = {key: app.config.get(key) for key in ("PLATFORM_WEBHOOK_URL", "PLATFORM_WEBHOOK_SECRET")}
    app.config.update(PLATFORM_WEBHOOK_URL=receiver.url, PLATFORM_WEBHOOK_SECRET="platform-secret")
    worker.env.update(PLATFORM_WEBHOOK_URL=receiver.url, PLATFORM_WEBHOOK_SECRET="platform-secret")
    yield receiver
    app.config.update(saved)
    receiver.stop()


def queued_jobs(app) -> int:
    from jobs.queue import WORKER_QUEUES, get_queue

    return sum(get_queue(name).count for name in WORKER_QUEUES)
