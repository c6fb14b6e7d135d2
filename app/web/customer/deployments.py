"""Customer deployments page: state, plan, hourly price and month-to-date cost."""

from flask import render_template
from flask_login import current_user

from app.billing.usage import month_to_date
from app.extensions import db
from app.models.base import utcnow
from app.web.customer import bp
from app.web.helpers import customer_required


@bp.route("/deployments")
@customer_required
def deployments():
    now = utcnow()
    costs = month_to_date(db.session, current_user.id, now)
    return render_template(
        "customer/deployments.html", costs=costs, now=now, total_cents=sum(c.amount_cents for c in costs)
    )
