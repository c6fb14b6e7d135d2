"""Admin: a customer's dunning panel — history, holds, grace extension (dunning issue).

The panel (`admin/_customer_dunning.html`) is included by the admin customer page; it reads its
data through the `admin_dunning(customer_id)` template function registered here.
"""

from flask import flash, redirect, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from werkzeug.routing import BuildError
from wtforms import IntegerField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange

from app.billing import dunning as dunning_service
from app.billing import holds
from app.extensions import db
from app.models import User
from app.web.admin import bp
from app.web.helpers import admin_required, is_htmx, render_flashes_oob

CUSTOMER_PAGE_ENDPOINTS = ("admin.customer", "admin.customer_detail", "admin.show_customer")


class HoldForm(FlaskForm):
    reason = TextAreaField("Reason", validators=[DataRequired(message="Say why."), Length(max=2000)])


class LiftHoldForm(FlaskForm):
    pass


class ExtendGraceForm(FlaskForm):
    days = IntegerField("Extend grace by (days)", default=30,
                        validators=[DataRequired(message="Enter a number of days."),
                                    NumberRange(min=1, max=366, message="Between 1 and 366 days.")])


@bp.app_context_processor
def _dunning_template_functions():
    def admin_dunning(customer_id: int):
        return dunning_service.dunning_history(db.session, customer_id)

    return {"admin_dunning": admin_dunning}


def _customer_or_404(customer_id: int) -> User:
    from flask import abort

    customer = db.session.get(User, customer_id)
    if customer is None or customer.is_admin:
        abort(404)
    return customer


def customer_page_url(customer_id: int) -> str:
    for endpoint in CUSTOMER_PAGE_ENDPOINTS:
        try:
            return url_for(endpoint, customer_id=customer_id)
        except BuildError:
            continue
    return url_for("admin.index")


def _panel_response(customer: User, status: int = 200, **forms):
    """HTMX: the panel fragment plus flashes; otherwise back to the customer page (303)."""
    if not is_htmx():
        return redirect(customer_page_url(customer.id), code=303)
    from flask import render_template

    db.session.refresh(customer)
    body = render_template("admin/_customer_dunning.html", customer=customer, **forms) + render_flashes_oob()
    return body, status


def _form_errors(form: FlaskForm) -> None:
    for errors in form.errors.values():
        for error in errors:
            flash(error, "error")


@bp.post("/customers/<id:customer_id>/hold")
@admin_required
def place_customer_hold(customer_id: int):
    customer = _customer_or_404(customer_id)
    form = HoldForm()
    if not form.validate_on_submit():
        _form_errors(form)
        return _panel_response(customer, 422, hold_form=form)
    holds.place_hold(db.session, current_user.id, customer.id, form.reason.data)
    flash(f"{customer.email} is on hold: they cannot start new deployments.", "success")
    return _panel_response(customer)


@bp.post("/customers/<id:customer_id>/hold/lift")
@admin_required
def lift_customer_hold(customer_id: int):
    customer = _customer_or_404(customer_id)
    if not LiftHoldForm().validate_on_submit():
        flash("The form expired; try again.", "error")
        return _panel_response(customer, 400)
    holds.lift_hold(db.session, current_user.id, customer.id)
    flash(f"The hold on {customer.email} is lifted.", "success")
    return _panel_response(customer)


@bp.post("/customers/<id:customer_id>/dunning/extend-grace")
@admin_required
def extend_customer_grace(customer_id: int):
    customer = _customer_or_404(customer_id)
    form = ExtendGraceForm()
    if not form.validate_on_submit():
        _form_errors(form)
        return _panel_response(customer, 422, grace_form=form)
    try:
        until = dunning_service.extend_grace(db.session, current_user.id, customer.id, form.days.data)
    except dunning_service.DunningError as error:
        flash(str(error), "error")
        return _panel_response(customer, 409)
    flash(f"Grace extended: deployments will not be deleted before {until:%Y-%m-%d %H:%M} UTC.", "success")
    return _panel_response(customer)
