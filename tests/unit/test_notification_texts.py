"""Pure pieces of the notifications: stable Message-IDs from keys, decline reasons in words."""

from datetime import UTC, datetime

import pytest

from app.billing.card_attempts import AttemptView, decline_reason
from app.billing.notifications import KINDS, is_optional, message_id_for
from app.models import ChargeAttempt

pytestmark = pytest.mark.unit


def test_the_message_id_is_derived_from_the_key_only():
    assert message_id_for("invoice-issued:42") == message_id_for("invoice-issued:42")
    assert message_id_for("invoice-issued:42") != message_id_for("invoice-issued:43")
    assert message_id_for("invoice-issued:42").startswith("<n-") and message_id_for("x").endswith("@paydesk.local>")


def test_only_receipts_are_optional():
    assert {kind for kind in KINDS if is_optional(kind)} == {"payment_receipt", "topup_receipt"}
    assert not is_optional("payment_failed") and not is_optional("card_removed")
    assert not is_optional("deployments_marked_for_deletion")


@pytest.mark.parametrize(("status", "code", "message", "expected"), [
    ("declined", "insufficient_funds", "Your card has insufficient funds.", "insufficient funds"),
    ("declined", "card_declined", "Your card was declined.", "declined by the bank"),
    ("declined", "weird_new_code", "The bank said no.", "The bank said no"),
    ("requires_action", "authentication_required", "", "your bank asks you to confirm the payment"),
])
def test_decline_reasons_are_said_in_words(status, code, message, expected):
    attempt = ChargeAttempt(status=status, error_code=code, error_message=message)
    assert decline_reason(attempt) == expected


def test_an_attempt_reads_as_one_sentence():
    at = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    view = AttemptView(1, 7, "Visa ending 0341", "declined", 4200, at, "insufficient funds", "pi_1")
    assert view.sentence == "Visa ending 0341 declined on 2026-11-23: insufficient funds"
    paid = AttemptView(2, 7, "Visa ending 4242", "succeeded", 4200, at, None, "pi_2")
    assert paid.sentence == "Visa ending 4242 charged on 2026-11-23"
