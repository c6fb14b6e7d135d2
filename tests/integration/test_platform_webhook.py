"""The outgoing platform webhook: signed (HMAC-SHA256, `Paydesk-Signature: t=…,v1=…`) and retried
with backoff when the receiver fails."""

import hashlib
import hmac
import json
import time
from datetime import timedelta

import pytest
from rq.registry import ScheduledJobRegistry
from sqlalchemy import select

from app.models.base import utcnow
from app.models.dunning import PlatformWebhookDelivery
from app.platform_notify import InvalidSignature, sign, verify_signature
from jobs.dunning import run_dunning
from jobs.queue import get_queue
from tests.integration import dunning_helpers
from tests.integration.dunning_helpers import open_invoice, run_deployment, travel

pytestmark = pytest.mark.integration
platform_receiver = dunning_helpers.platform_receiver


@pytest.mark.unit
def test_signature_verifies_and_rejects_tampering_wrong_secret_and_old_timestamps():
    body = b'{"id":"evt_1"}'
    header = sign(body, "s3cret", timestamp=1_800_000_000)
    t, v1 = header.split(",")
    assert t == "t=1800000000"
    assert v1 == "v1=" + hmac.new(b"s3cret", b"1800000000." + body, hashlib.sha256).hexdigest()
    verify_signature(body, header, "s3cret", now=1_800_000_100)
    for bad_body, secret, now in ((b'{"id":"evt_2"}', "s3cret", 1_800_000_000),
                                  (body, "other", 1_800_000_000),
                                  (body, "s3cret", 1_800_000_000 + 301)):
        with pytest.raises(InvalidSignature):
            verify_signature(bad_body, header, secret, now=now)
    with pytest.raises(InvalidSignature):
        verify_signature(body, "garbage", "s3cret")


def _webhook_jobs(jobs) -> list:
    return [job for job in jobs if job.func_name == "jobs.dunning.deliver_platform_webhook"]


def test_platform_webhook_is_retried_with_backoff_until_the_receiver_accepts_it(
    app, session, factory, worker, platform_receiver
):
    platform_receiver.statuses = [500, 200]
    now = utcnow()  # real time: the worker subprocess records the failure on the real clock
    customer = factory.customer()
    run_deployment(session, customer, "hook-vm", now - timedelta(days=120))
    open_invoice(session, customer, 2_500, now - timedelta(days=93))

    run_dunning()
    worker.run_burst()
    assert len(platform_receiver.requests) == 1
    delivery = session.scalar(select(PlatformWebhookDelivery))
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 500)
    assert delivery.next_attempt_at > utcnow()
    registry = ScheduledJobRegistry(queue=get_queue())
    assert len(_webhook_jobs(get_queue().job_class.fetch_many(registry.get_job_ids(), connection=get_queue().connection))) == 1

    # Before the backoff has passed, another run neither re-sends nor creates a second event.
    run_dunning()
    assert _webhook_jobs(get_queue().jobs) == []
    assert session.scalars(select(PlatformWebhookDelivery)).all() == [delivery]

    with travel(delivery.next_attempt_at + timedelta(seconds=1)):
        run_dunning()
    worker.run_burst()
    assert len(platform_receiver.requests) == 2
    session.refresh(delivery)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 200)

    bodies = [body for _, body in platform_receiver.requests]
    assert bodies[0] == bodies[1]  # the same event, redelivered
    assert json.loads(bodies[0])["id"] == delivery.event_id
    for headers, body in platform_receiver.requests:
        verify_signature(body, headers["Paydesk-Signature"], "platform-secret", now=int(time.time()))

    run_dunning()
    if get_queue().count:
        worker.run_burst()
    assert len(platform_receiver.requests) == 2
