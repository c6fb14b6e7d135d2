"""Email settings: receipts on or off, and the notifications sent (issue 12)."""

from flask import flash, redirect, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import BooleanField

from app.billing import notifications
from app.extensions import db
from app.web.customer import bp
from app.web.helpers import customer_required, is_htmx, render_page_or_block


class ReceiptsForm(FlaskForm):
    receipts = BooleanField("Email me receipts for payments and top-ups")


def _render(form: ReceiptsForm, status: int = 200):
    return render_page_or_block(
        "customer/notification_settings.html", "receipts_form", form=form,
        history=notifications.notifications_of(db.session, current_user.id, limit=50),
    ), status


@bp.get("/settings/notifications")
@customer_required
def notification_settings():
    return _render(ReceiptsForm(receipts=notifications.receipts_enabled(db.session, current_user.id)))


@bp.post("/settings/notifications")
@customer_required
def save_notification_settings():
    form = ReceiptsForm()
    if not form.validate_on_submit():
        return _render(form, 400)
    notifications.set_receipts_enabled(db.session, current_user.id, form.receipts.data)
    flash("Receipts are on." if form.receipts.data else
          "Receipts are off. Failures, deletions and security notices still reach you.", "success")
    if is_htmx():
        return _render(form)
    return redirect(url_for("customer.notification_settings"), 303)
