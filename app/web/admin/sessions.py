"""Admin: sign a customer out everywhere (e.g. a stolen laptop, a suspected takeover). Audit-logged."""

from flask import flash, redirect, url_for
from flask_login import current_user

from app import accounts
from app.billing.audit import record_audit
from app.extensions import db
from app.web.admin import bp
from app.web.admin.customers import _customer_or_404
from app.web.forms import ConfirmForm
from app.web.helpers import admin_required


@bp.post("/customers/<id:customer_id>/sessions/end")
@admin_required
def end_customer_sessions(customer_id: int):
    customer = _customer_or_404(customer_id)
    if not ConfirmForm().validate_on_submit():
        flash("The form expired; try again.", "error")
        return redirect(url_for("admin.customer_detail", customer_id=customer.id), 303)
    ended = accounts.end_all_sessions(db.session, customer.id, reason="admin", commit=False)
    record_audit(db.session, current_user.id, "customer.sessions_ended", "user", customer.id, after={"ended": ended})
    db.session.commit()
    flash(f"{customer.email} was signed out everywhere ({ended} session{'s' if ended != 1 else ''} ended).", "success")
    return redirect(url_for("admin.customer_detail", customer_id=customer.id), 303)
