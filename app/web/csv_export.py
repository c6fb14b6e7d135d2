"""Every CSV download goes through `csv_response` (formula cells neutralised, never cached)."""

from collections.abc import Iterable

from flask import Response

from app.billing.csv_cells import csv_text


def csv_response(filename: str, header: Iterable, rows: Iterable[Iterable]) -> Response:
    """A CSV attachment. Cells are neutralised by `app.billing.csv_cells` (OWASP rule); the
    response is `no-store` because exports hold personal and money data."""
    safe_name = "".join(c for c in filename if c.isalnum() or c in "-_.") or "export.csv"
    response = Response(csv_text(header, rows), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{safe_name}"'
    response.headers["Cache-Control"] = "no-store"
    return response
