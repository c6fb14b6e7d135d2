"""Customer pages, one module per feature, all on the `customer` blueprint."""

from flask import Blueprint

bp = Blueprint("customer", __name__)

from app.web.customer import (  # noqa: E402,F401  (modules attach their routes to bp)
    activity,
    balance,
    cards,
    dashboard,
    deployments,
    invoices,
    notification_settings,
    profile,
    vouchers,
)
