"""The one period/date door (app.billing.periods) and the id converter's bounds."""

from datetime import UTC, date, datetime

import pytest

from app.billing.periods import InvalidPeriod, check_date, parse_datetime_utc, parse_period, period_bounds

pytestmark = pytest.mark.unit


def test_a_period_is_a_month_within_the_sane_range():
    assert parse_period(" 2026-10 ") == "2026-10"
    assert period_bounds("2026-12") == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    "text", ["9999-12", "1999-12", "2101-01", "2026-13", "2026-00", "2026-1", "26-10", "2026/10", "", None, 202610,
             "2026-10\x00", "2" * 10_000, "٢٠٢٦-١٠"],
)
def test_far_or_malformed_periods_are_refused_with_a_message(text):
    with pytest.raises(InvalidPeriod) as refused:
        period_bounds(text)
    assert str(refused.value)


def test_dates_and_times_outside_the_range_are_refused():
    assert check_date(date(2030, 1, 1)) == date(2030, 1, 1)
    with pytest.raises(InvalidPeriod, match="between 2000 and 2100"):
        check_date(date(9999, 12, 31), "The expiry date")
    formats = ("%Y-%m-%dT%H:%M",)
    assert parse_datetime_utc("", formats, "2026-11-01T00:00") is None
    assert parse_datetime_utc("2026-11-01T00:00", formats, "x") == datetime(2026, 11, 1, tzinfo=UTC)
    for bad in ("9999-12-31T23:59", "0001-01-01T00:00", "tomorrow", "9" * 10_000):
        with pytest.raises(InvalidPeriod):
            parse_datetime_utc(bad, formats, "2026-11-01T00:00")


def test_the_id_converter_accepts_only_ids_that_can_exist():
    from werkzeug.exceptions import NotFound
    from werkzeug.routing import Map, Rule

    from app.web.helpers import MAX_ID, IdConverter, id_from_text

    urls = Map([Rule("/invoices/<id:invoice_id>", endpoint="x")], converters={"id": IdConverter}).bind("localhost")
    assert urls.match("/invoices/42") == ("x", {"invoice_id": 42})
    assert urls.match(f"/invoices/{MAX_ID}") == ("x", {"invoice_id": MAX_ID})
    for bad in ("0", "-1", "007", str(MAX_ID + 1), "9" * 20, "99999999999999999999", "1e3", "+1", "%F0%9F%98%80"):
        with pytest.raises(NotFound):
            urls.match(f"/invoices/{bad}")
    assert id_from_text(" 12 ") == 12
    assert [id_from_text(t) for t in ("", "0", "-3", "²", "١٢", "9" * 5000, str(MAX_ID + 1), None)] == [None] * 8
