"""Customer dashboard: figures, the usage / forecast / runway panel, the spending limit."""

from flask import flash, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import Length

from app.billing import spending_limits
from app.billing.accounts_view import customer_dashboard
from app.billing.foresight import amount_input_text, customer_forecast
from app.billing.money import InvalidAmount, format_money
from app.billing.money_input import parse_money_cents
from app.billing.price_notices import AUDIENCE
from app.extensions import db
from app.web.customer import bp
from app.web.helpers import customer_required, is_htmx, render_flashes_oob


class SpendingLimitForm(FlaskForm):
    limit = StringField("Monthly spending limit (before tax; empty = no limit)", validators=[Length(max=32)])


def _limit_form(forecast=None) -> SpendingLimitForm:
    form = SpendingLimitForm()
    if not form.is_submitted() and forecast is not None and forecast.customer_limit_cents is not None:
        form.limit.data = amount_input_text(forecast.customer_limit_cents)
    return form


def _foresight_context() -> dict:
    forecast = customer_forecast(db.session, current_user.id)
    return {"forecast": forecast, "price_notices": forecast.price_notices, "price_notice_audience": AUDIENCE}


@bp.route("/dashboard")
@customer_required
def dashboard():
    view = customer_dashboard(db.session, current_user.id)
    return render_template(
        "customer/dashboard.html", figures=view.figures, dunning=view.dunning, open_invoices=view.open_invoices,
        forecast=view.forecast, price_notices=view.forecast.price_notices, price_notice_audience=AUDIENCE,
        limit_form=_limit_form(view.forecast),
    )


@bp.get("/dashboard/foresight")
@customer_required
def foresight_panel():
    """The usage, forecast and runway panel alone (it refreshes itself in place)."""
    return render_template("customer/_foresight_panel.html", **_foresight_context())


def _render_limit(form: SpendingLimitForm, status: int = 200):
    if not is_htmx():
        for error in form.limit.errors:
            flash(error, "error")
        return redirect(url_for("customer.dashboard"), 303)
    body = render_template("customer/_spending_limit_panel.html", limit_form=form, **_foresight_context())
    return body + render_flashes_oob(), status, {"HX-Trigger": "funds-changed"}


@bp.post("/spending-limit")
@customer_required
def set_spending_limit():
    form = _limit_form()
    if not form.validate_on_submit():
        return _render_limit(form, 400)
    text = (form.limit.data or "").strip()
    try:
        cents = parse_money_cents(text, max_cents=spending_limits.MAX_LIMIT_CENTS) if text else None
        spending_limits.set_customer_limit(db.session, current_user.id, cents)
    except InvalidAmount:
        form.limit.errors = [*form.limit.errors, "Enter an amount like 50.00, or leave it empty for no limit."]
        return _render_limit(form, 400)
    except spending_limits.SpendingLimitError as exc:
        form.limit.errors = [*form.limit.errors, str(exc)]
        return _render_limit(form, 400)
    flash(f"Monthly spending limit set to {format_money(cents)}." if cents is not None
          else "Monthly spending limit removed.", "success")
    return _render_limit(form)
