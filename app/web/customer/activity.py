"""The customer's activity page: every money movement and card attempt, by month, with a CSV export."""

from decimal import Decimal

from flask import current_app, request
from flask_login import current_user

from app.billing.activity import InvalidMonth, activity_page, activity_rows, months_since, parse_month
from app.billing.money import minor_unit_factor, to_decimal
from app.extensions import db
from app.web.csv_export import csv_response
from app.web.customer import bp
from app.web.helpers import customer_required, render_page_or_block

CSV_HEADER = ["date_utc", "description", "account", "amount", "status", "attempted_amount", "currency",
              "invoice", "reference"]
MAX_PAGE = 1_000_000
ATTEMPT_KINDS = ("card_attempt", "card_payment", "card_topup_attempt")


def _month_arg() -> tuple[str | None, str | None]:
    """(month, error): an invalid month shows every month plus a message, never a 5xx."""
    try:
        return parse_month(request.args.get("month", "")[:20]), None
    except InvalidMonth as exc:
        return None, str(exc)


def _amount(cents: int) -> Decimal:
    """Major units with the currency's places (5.00, not 5): a number cell, not text."""
    return to_decimal(cents).quantize(Decimal(1) / minor_unit_factor())


@bp.get("/activity")
@customer_required
def activity():
    month, error = _month_arg()
    page_no = min(max(request.args.get("page", 1, type=int) or 1, 1), MAX_PAGE)
    page = activity_page(db.session, current_user.id, month=month, page=page_no)
    body = render_page_or_block(
        "customer/activity.html", "activity_list", page=page, month=month, month_error=error,
        months=months_since(current_user),
    )
    return body, 400 if error else 200


@bp.get("/activity.csv")
@customer_required
def activity_csv():
    month, error = _month_arg()
    if error:
        return error, 400
    currency = current_app.config["CURRENCY"].upper()
    rows = [
        [
            row.occurred_at.strftime("%Y-%m-%d %H:%M:%S"), row.description, row.account,
            _amount(row.amount_cents), row.status,
            _amount(row.attempted_cents) if row.kind in ATTEMPT_KINDS else "",
            currency, row.invoice_number or "", row.reference or "",
        ]
        for row in activity_rows(db.session, current_user.id, month=month)
    ]
    return csv_response(f"paydesk-activity-{month or 'all'}.csv", CSV_HEADER, rows)
