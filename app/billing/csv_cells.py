"""CSV text that spreadsheets open as data, never as formulas (OWASP "CSV injection").

One pure function for every export: the web layer wraps it in a download response
(`app.web.csv_export.csv_response`), the voucher batch page builds its `data:` link from it.

Rule (OWASP): a text cell that begins with `=`, `+`, `-`, `@`, a tab or a carriage return is
prefixed with a single quote, so Excel, LibreOffice and Google Sheets show it as text. The csv
module quotes every cell that holds a separator, a quote or a line break, so a cell cannot break
out into the next one. Numbers (int, Decimal) are written as they are: `-12.50` is a number, not
a formula, and a spreadsheet should still add it up.
"""

import csv
import io
from collections.abc import Iterable
from decimal import Decimal

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value) -> str | int | Decimal:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | Decimal):
        return value
    text = str(value)
    if text.startswith(FORMULA_TRIGGERS):
        return "'" + text
    return text


def csv_text(header: Iterable, rows: Iterable[Iterable]) -> str:
    """The whole CSV document (RFC 4180 line endings), every cell neutralised."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_MINIMAL)
    writer.writerow([neutralise_cell(cell) for cell in header])
    for row in rows:
        writer.writerow([neutralise_cell(cell) for cell in row])
    return out.getvalue()
