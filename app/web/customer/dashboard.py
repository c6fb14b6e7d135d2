"""Customer dashboard."""

from flask import render_template
from flask_login import current_user

from app.billing.accounts_view import dashboard_figures
from app.billing.dunning import dunning_summary
from app.extensions import db
from app.web.customer import bp
from app.web.helpers import customer_required


@bp.route("/dashboard")
@customer_required
def dashboard():
    figures = dashboard_figures(db.session, current_user.id)
    return render_template(
        "customer/dashboard.html", figures=figures, dunning=dunning_summary(db.session, current_user.id)
    )
