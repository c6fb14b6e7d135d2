"""Card top-ups whose Stripe outcome is not known yet (timeout, crashed request): ask again."""

import logging

from app.billing.card_topups import redrive_unresolved_card_topups
from jobs.runtime import job_session

log = logging.getLogger(__name__)


def redrive_card_topups() -> int:
    """Re-send every card top-up left `pending`/`unknown` with its own idempotency key (Stripe
    replays its first answer; nothing is charged twice) and credit the ones that succeeded.
    Safe at any frequency. Returns how many were resolved."""
    with job_session() as session:
        resolved = redrive_unresolved_card_topups(session)
    if resolved:
        log.info("card top-ups: resolved %d unknown outcome(s)", resolved)
    return resolved
