"""The outgoing, signed webhook that tells the provisioning platform about billing decisions
(today: deployments marked for deletion). The API's billing status says the same thing; this is
the optional push (config PLATFORM_WEBHOOK_URL / PLATFORM_WEBHOOK_SECRET).

Events are written as `PlatformWebhookDelivery` rows in the transaction that made the decision
(outbox) and delivered by a job. Delivery is at-least-once: the receiver dedupes on the event id.
The signature header is `Paydesk-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`,
like Stripe's, so a receiver can also reject replays older than a few minutes.
"""

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import event, or_, select, update
from sqlalchemy.orm import Session

from app.models.base import utcnow
from app.models.dunning import PlatformWebhookDelivery

SIGNATURE_HEADER = "Paydesk-Signature"
SIGNATURE_TOLERANCE_SECONDS = 300
CLAIM_SECONDS = 60
# Delay before the n-th retry when the receiver fails (the last one repeats).
BACKOFF_SECONDS = (30, 120, 600, 1800, 3600, 3 * 3600, 6 * 3600)


class WebhookDeliveryFailed(Exception):
    """The receiver did not answer 2xx; the delivery stays pending and is retried later."""


class InvalidSignature(Exception):
    pass


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(body: bytes, header: str | None, secret: str, *, tolerance: int = SIGNATURE_TOLERANCE_SECONDS,
                     now: int | None = None) -> None:
    """What a receiver does: raise InvalidSignature unless `header` signs `body` recently."""
    try:
        parts = dict(item.split("=", 1) for item in (header or "").split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (ValueError, KeyError):
        raise InvalidSignature("malformed signature header") from None
    expected = sign(body, secret, timestamp).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, given):
        raise InvalidSignature("signature mismatch")
    now = int(time.time()) if now is None else now
    if abs(now - timestamp) > tolerance:
        raise InvalidSignature("timestamp outside the tolerance")


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=BACKOFF_SECONDS[min(max(attempts, 1), len(BACKOFF_SECONDS)) - 1])


def webhook_configured() -> bool:
    return bool(current_app.config.get("PLATFORM_WEBHOOK_URL"))


def record_platform_event(session: Session, customer_id: int, event_type: str, data: dict,
                          now: datetime | None = None) -> PlatformWebhookDelivery | None:
    """Queue one event for the platform in the caller's transaction (does not commit).
    Returns None when no webhook URL is configured (the API status is then the only channel)."""
    if not webhook_configured():
        return None
    now = now or utcnow()
    event_id = f"evt_{uuid.uuid4().hex}"
    payload = {"id": event_id, "type": event_type, "created": int(now.timestamp()), "data": data}
    delivery = PlatformWebhookDelivery(
        event_id=event_id, event_type=event_type, customer_id=customer_id, payload=payload,
        status="pending", created_at=now, next_attempt_at=now, attempts=0,
    )
    session.add(delivery)
    session.flush()
    return delivery


_PENDING_KEY = "paydesk_pending_platform_deliveries"
_enqueuer = None


def set_delivery_enqueuer(enqueuer) -> None:
    """`jobs` registers how a committed delivery is handed to a worker (`enqueuer(delivery_id)`)."""
    global _enqueuer
    _enqueuer = enqueuer


def enqueue_after_commit(session: Session, delivery_id: int) -> None:
    """Deliver this queued event right after the caller's transaction commits (the dunning run's
    sweep of due deliveries still covers a lost enqueue)."""
    session.info.setdefault(_PENDING_KEY, set()).add(delivery_id)


@event.listens_for(Session, "after_commit")
def _enqueue_deliveries(session: Session) -> None:
    ids = session.info.pop(_PENDING_KEY, None)
    if ids and _enqueuer is not None:
        for delivery_id in sorted(ids):
            _enqueuer(delivery_id)


@event.listens_for(Session, "after_rollback")
def _forget_deliveries(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


def _claim(session: Session, delivery_id: int, now: datetime) -> bool:
    result = session.execute(
        update(PlatformWebhookDelivery)
        .where(
            PlatformWebhookDelivery.id == delivery_id,
            or_(
                PlatformWebhookDelivery.status == "pending",
                (PlatformWebhookDelivery.status == "sending") & (PlatformWebhookDelivery.claimed_until < now),
            ),
        )
        .values(status="sending", claimed_until=now + timedelta(seconds=CLAIM_SECONDS))
    )
    session.commit()
    return result.rowcount == 1


def deliver(session: Session, delivery_id: int) -> bool:
    """POST one pending event, signed. True when delivered now, False when there was nothing to do
    (already delivered, or another job holds it). Raises WebhookDeliveryFailed (after recording the
    attempt and the next retry time) so the calling job is retried."""
    now = utcnow()
    if not _claim(session, delivery_id, now):
        return False
    delivery = session.get(PlatformWebhookDelivery, delivery_id)
    url = current_app.config.get("PLATFORM_WEBHOOK_URL")
    secret = current_app.config.get("PLATFORM_WEBHOOK_SECRET") or ""
    body = json.dumps(delivery.payload, sort_keys=True, separators=(",", ":")).encode()
    request = urllib.request.Request(
        url or "", data=body, method="POST",
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, secret),
                 "Paydesk-Event-Id": delivery.event_id, "User-Agent": "Paydesk-Webhooks/1"},
    )
    status_code, error = None, None
    try:
        if not url:
            raise ValueError("PLATFORM_WEBHOOK_URL is not set")
        with urllib.request.urlopen(request, timeout=10) as response:
            status_code = response.status
    except urllib.error.HTTPError as exc:
        status_code, error = exc.code, f"HTTP {exc.code}"
    except Exception as exc:  # network errors, timeouts, bad URL: all retried later
        error = f"{type(exc).__name__}: {exc}"
    delivery.attempts += 1
    delivery.last_status_code = status_code
    delivery.claimed_until = None
    if error is None and status_code is not None and 200 <= status_code < 300:
        delivery.status = "delivered"
        delivery.delivered_at = utcnow()
        delivery.last_error = None
        session.commit()
        return True
    delivery.status = "pending"
    delivery.last_error = (error or f"HTTP {status_code}")[:500]
    delivery.next_attempt_at = utcnow() + backoff(delivery.attempts)
    session.commit()
    raise WebhookDeliveryFailed(f"platform webhook {delivery.event_id}: {delivery.last_error}")


def due_deliveries(session: Session, now: datetime, requeue_after: timedelta) -> list[int]:
    """Pending deliveries whose retry time has come (or whose claim expired); pushes their
    `next_attempt_at` forward so concurrent sweeps do not enqueue them again. Commits."""
    rows = session.scalars(
        select(PlatformWebhookDelivery)
        .where(
            or_(
                (PlatformWebhookDelivery.status == "pending") & (PlatformWebhookDelivery.next_attempt_at <= now),
                (PlatformWebhookDelivery.status == "sending") & (PlatformWebhookDelivery.claimed_until < now),
            )
        )
        .order_by(PlatformWebhookDelivery.id)
        .limit(500)
        .with_for_update(skip_locked=True)
    ).all()
    for row in rows:
        row.next_attempt_at = now + requeue_after
    ids = [row.id for row in rows]
    session.commit()
    return ids
