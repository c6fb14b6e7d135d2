"""Catching up with Stripe: the events API replays what a missed webhook would have told us."""

import logging

from sqlalchemy import func, select

from app.billing.refunds import send_pending_refunds
from app.billing.stripe_events import apply_event
from app.models.stripe_events import StripeEvent
from app.payments import gateway
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
        events = list(gateway.iter_events(created_gte=since))
        session.rollback()
        ids = [e["id"] for e in events]
        known: set[str] = set()
        for start in range(0, len(ids), 500):
            known.update(session.scalars(select(StripeEvent.id).where(StripeEvent.id.in_(ids[start : start + 500]))))
        session.rollback()
        for event in sorted(events, key=lambda e: (int(e.get("created") or 0), e["id"])):
            if event["id"] in known:
                continue
            try:
                if apply_event(session, event, source="reconcile"):
                    applied += 1
            except Exception:
                log.exception("could not apply Stripe event %s; will retry next run", event["id"])
        send_pending_refunds(session)
    if applied:
        log.info("reconciled %d missed Stripe event(s)", applied)
    return applied
