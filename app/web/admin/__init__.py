"""Admin pages, one module per feature, all on the `admin` blueprint."""

from flask import Blueprint

bp = Blueprint("admin", __name__)

from app.web.admin import (  # noqa: E402,F401  (modules attach their routes to bp)
    credit_notes,
    customers,
    dunning,
    home,
    invoices,
    pricing,
    refunds,
    sessions,
    usage_credits,
    vouchers,
)
