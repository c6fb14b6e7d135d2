"""The foresight rules on hand-computed examples (exact integer arithmetic, invoice rounding)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from app.billing.foresight import format_moment, hours_text, next_month_end

pytestmark = pytest.mark.unit


@pytest.fixture
def app_context():
    from flask import Flask

    app = Flask(__name__)
    app.config.update(GRACE_PERIOD_DAYS=92)
    with app.app_context():
        yield


def test_hours_are_truncated_to_hundredths_never_rounded_up():
    assert hours_text(0) == "0.00"
    assert hours_text(35) == "0.00"  # 0.0097 h
    assert hours_text(36) == "0.01"
    assert hours_text(240 * 3600) == "240.00"
    assert hours_text(3600 + 1799) == "1.49"


def test_moments_read_like_a_sentence_with_the_year_only_when_it_differs():
    now = datetime(2026, 11, 15, 5, 0, tzinfo=UTC)
    assert format_moment(datetime(2026, 12, 14, 9, 0, tzinfo=UTC), now) == "14 December, 09:00 UTC"
    assert format_moment(datetime(2027, 4, 3, 0, 0, tzinfo=UTC), now) == "3 April 2027, 00:00 UTC"


def test_next_month_end_is_the_start_of_the_month_after_next():
    assert next_month_end(datetime(2026, 11, 15, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert next_month_end(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == datetime(2027, 2, 1, tzinfo=UTC)


def test_runway_rule_on_a_hand_computed_example(app_context):
    from app.billing.dunning import runway_from

    now = datetime(2026, 11, 15, 5, 0, tzinfo=UTC)
    # $25 cash + $10 voucher, nothing used yet, $0.05/h = 5 cents/h, no tax: 700 h exactly.
    runway = runway_from(hourly_cost_cents=Decimal(5), tax_rate=Decimal(0), balance_cents=3500, unbilled_cents=0,
                         debt_cents=0, deletion_due=None, now=now)
    assert runway.runs_out_at == datetime(2026, 12, 14, 9, 0, tzinfo=UTC)
    assert runway.deletion_at == datetime(2027, 1, 1, tzinfo=UTC) + timedelta(days=92)
    # 19 % VAT: burn 5.95 cents/h; $1.01 unbilled + 0.1919 → 19 cents tax; $2.00 debt:
    # 3500 − 101 − 19 − 200 = 3180 cents / 5.95 = 534.4537… h → 534 h 27 min 13 s (rounded down)
    runway = runway_from(hourly_cost_cents=Decimal(5), tax_rate=Decimal("0.19"), balance_cents=3500,
                         unbilled_cents=101, debt_cents=200, deletion_due=datetime(2027, 2, 1, tzinfo=UTC), now=now)
    assert runway.available_cents == 3180
    assert runway.runs_out_at == now + timedelta(hours=534, minutes=27, seconds=13)
    assert runway.deletion_at == datetime(2027, 2, 1, tzinfo=UTC)  # an earlier date already set by an invoice
    assert runway_from(hourly_cost_cents=Decimal(0), tax_rate=Decimal(0), balance_cents=1, unbilled_cents=0,
                       debt_cents=0, deletion_due=None, now=now) is None
