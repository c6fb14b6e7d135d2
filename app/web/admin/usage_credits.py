"""Admin: invoices whose billed usage is higher than recomputed usage, with a prefilled credit note."""

from flask import request

from app.billing.monthly import InvoicingError
from app.billing.usage import previous_period
from app.billing.usage_credits import prefill_args, usage_credit_suggestions
from app.extensions import db
from app.models import User
from app.web.admin import bp
from app.web.helpers import admin_required, render_page_or_block


@bp.get("/usage-corrections")
@admin_required
def usage_corrections():
    period = (request.args.get("period") or previous_period()).strip()[:7]
    error, suggestions = None, []
    try:
        suggestions = usage_credit_suggestions(db.session, period)
    except (ValueError, InvoicingError) as exc:
        error = str(exc)
    emails = {u.id: u.email for u in db.session.query(User).filter(User.id.in_({s.customer_id for s in suggestions}))}
    return render_page_or_block(
        "admin/usage_corrections.html", "corrections", period=period, error=error, suggestions=suggestions,
        emails=emails, prefill=lambda s: prefill_args(s, period),
    ), (400 if error else 200)
