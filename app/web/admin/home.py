"""Admin landing page."""

from flask import render_template
from sqlalchemy import func, select

from app.extensions import db
from app.models import Invoice, User
from app.web.admin import bp
from app.web.helpers import admin_required


@bp.route("/")
@admin_required
def index():
    session = db.session
    stats = {
        "customers": session.scalar(select(func.count(User.id)).where(User.is_admin.is_(False))),
        "open_invoices": session.scalar(select(func.count(Invoice.id)).where(Invoice.state == "open")),
        "debt_cents": session.scalar(
            select(func.coalesce(func.sum(Invoice.total_cents - Invoice.paid_cents), 0)).where(Invoice.state == "open")
        ),
    }
    return render_template("admin/index.html", stats=stats)
