"""The one door for billing periods and dates typed by a person or a client.

A period is a calendar month UTC written "YYYY-MM"; dates and times are UTC. Everything is checked
to lie within years MIN_YEAR..MAX_YEAR, so that no arithmetic on them (month ends, "valid until"
plus a day, offsets) can overflow Python's datetime (year 9999) or the database, and a far date
is a clear message instead of a 500. Errors are `InvalidPeriod` (a ValueError) fit for the person.
"""

import re
from datetime import UTC, date, datetime

MIN_YEAR = 2000
MAX_YEAR = 2100
_PERIOD = re.compile(r"([0-9]{4})-([0-9]{2})")
_MAX_TEXT = 40


class InvalidPeriod(ValueError):
    """A period or date outside what Paydesk accepts; `str(error)` is fit for the person."""


def parse_period(text) -> str:
    """'2026-10' → '2026-10'; anything else, or a year outside MIN_YEAR..MAX_YEAR, is refused."""
    if not isinstance(text, str) or len(text) > _MAX_TEXT:
        raise InvalidPeriod("Enter a period like 2026-10.")
    match = _PERIOD.fullmatch(text.strip())
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise InvalidPeriod("Enter a period like 2026-10.")
    _check_year(int(match.group(1)))
    return match.group(0)


def period_bounds(period) -> tuple[datetime, datetime]:
    """'2026-10' → [2026-10-01T00:00Z, 2026-11-01T00:00Z)."""
    year, month = (int(part) for part in parse_period(period).split("-"))
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def check_date(value: date, what: str = "The date") -> date:
    """A date (or datetime) inside MIN_YEAR..MAX_YEAR, or InvalidPeriod."""
    _check_year(value.year, what)
    return value


def parse_datetime_utc(text, formats: tuple[str, ...], example: str, what: str = "The time") -> datetime | None:
    """Empty → None; otherwise the first of `formats` that matches, as UTC, within the year range.
    Messages start with `what`, e.g. "Effective time must look like 2026-11-01T00:00 (UTC)."."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    if len(text) <= _MAX_TEXT:
        for fmt in formats:
            try:
                moment = datetime.strptime(text, fmt).replace(tzinfo=UTC)
            except ValueError:
                continue
            return check_date(moment, what)
    raise InvalidPeriod(f"{what} must look like {example} (UTC).")


def _check_year(year: int, what: str = "The period") -> None:
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise InvalidPeriod(f"{what} must lie between {MIN_YEAR} and {MAX_YEAR}.")
