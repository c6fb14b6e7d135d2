"""Catching up with Stripe: the events API replays what a missed webhook would have told us."""

import logging

from sqlalchemy import func, select

from app.billing.refunds import send_pending_refunds
from app.billing.stripe_events import apply_event
from app.models.stripe_events import StripeEvent
from app.payments import gateway
from app.payments.event_shape import MalformedEvent, parse_event
from jobs.runtime import job_session

log = logging.getLogger(__name__)
# Events can be delivered (and so recorded) out of order: look back this far before the newest
# event we have seen. Stripe keeps events for 30 days.
LOOKBACK_SECONDS = 3 * 24 * 3600


def reconcile_stripe_events() -> int:
    """Apply every Stripe event since (the last seen event − a look-back window) that is not yet
    processed, ordered by `created`. Safe to run at any frequency and concurrently with webhooks
    (apply_event records each id once). Returns the number of events applied."""
    applied = 0
    with job_session() as session:
        last_seen = session.scalar(select(func.max(StripeEvent.created)))
        since = None if last_seen is None else max(0, last_seen - LOOKBACK_SECONDS)
        wellformed, malformed = [], []
        for raw in gateway.iter_events(created_gte=since):
            try:
                wellformed.append((parse_event(raw), raw))
            except MalformedEvent:
                malformed.append(raw)
        session.rollback()
        for raw in malformed:
            try:
                apply_event(session, raw, source="reconcile")
            except MalformedEvent as exc:  # recorded as ignored by apply_event
                log.warning("ignored a malformed Stripe event (recorded as %s): %s", exc.record_id, exc.reason)
        ids = [parsed.id for parsed, _ in wellformed]
        known: set[str] = set()
        for start in range(0, len(ids), 500):
            known.update(session.scalars(select(StripeEvent.id).where(StripeEvent.id.in_(ids[start : start + 500]))))
        session.rollback()
        for parsed, raw in sorted(wellformed, key=lambda pair: (pair[0].created, pair[0].id)):
            if parsed.id in known:
                continue
            try:
                if apply_event(session, raw, source="reconcile"):
                    applied += 1
            except Exception:
                log.exception("could not apply Stripe event %s; will retry next run", parsed.id)
        send_pending_refunds(session)
    if applied:
        log.info("reconciled %d missed Stripe event(s)", applied)
    return applied
