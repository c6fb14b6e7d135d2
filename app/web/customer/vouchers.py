"""Voucher redemption (vouchers issue): the dashboard's redeem panel posts here.

HTMX: the response is the panel (with its message) plus the dashboard figures as an out-of-band
swap, so the new voucher balance shows without a reload. Without JS: flash and 303 to the dashboard.
Failed attempts are throttled per customer and per IP (app.billing.vouchers.redemption_throttle);
a 429 says when to try again (Retry-After).
"""

from flask import flash, redirect, render_template, url_for
from flask_limiter.util import get_remote_address
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from app.billing import vouchers as voucher_service
from app.billing.accounts_view import dashboard_figures
from app.billing.money import format_money
from app.billing.throttle import retry_message
from app.extensions import db, limiter
from app.web.customer import bp
from app.web.helpers import customer_required, is_htmx


class RedeemForm(FlaskForm):
    code = StringField("Voucher code", validators=[DataRequired(message="Enter a voucher code."), Length(max=100)])


def _throttle():
    return voucher_service.redemption_throttle(limiter.storage)


def _respond(*, message: str, category: str, status: int, code: str = "", retry_after: int | None = None):
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    if not is_htmx():
        if retry_after is not None:
            return render_template("errors/error.html", code=429, description=message), 429, headers
        flash(message, category)
        return redirect(url_for("customer.dashboard"), 303)
    body = render_template(
        "customer/_redeem_panel.html",
        redeem_message=message,
        redeem_category=category,
        redeem_code=code if category == "error" else "",
    )
    if status == 200:
        figures = dashboard_figures(db.session, current_user.id)
        body += render_template("customer/_figures.html", figures=figures, oob=True)
        headers["HX-Trigger"] = "funds-changed"  # panels showing balances refresh themselves
    return body, status, headers


@bp.post("/vouchers/redeem")
@customer_required
def redeem_voucher():
    form = RedeemForm()
    typed = (form.code.data or "")[:100]
    if not form.validate_on_submit():
        errors = form.code.errors or ["Enter a voucher code."]
        return _respond(message=errors[0], category="error", status=400, code=typed)

    throttle = _throttle()
    keys = {"customer": str(current_user.id), "ip": get_remote_address()}
    wait = throttle.retry_after_seconds(keys)
    if wait is not None:
        return _respond(message=retry_message(wait), category="error", status=429, code=typed, retry_after=wait)

    try:
        redeemed = voucher_service.redeem_voucher(db.session, customer_id=current_user.id, code=typed)
    except voucher_service.VoucherError as exc:
        throttle.record(keys)
        return _respond(message=str(exc), category="error", status=exc.status, code=typed)
    return _respond(
        message=f"Voucher redeemed: {format_money(redeemed.amount_cents)} added to your voucher balance.",
        category="success",
        status=200,
    )
