"""Admin pricing pages: plans, price versions and history."""

from datetime import UTC, datetime

from flask import abort, flash, redirect, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional

from app.billing import pricing
from app.billing.money import format_unit_price
from app.billing.periods import InvalidPeriod, parse_datetime_utc
from app.billing.price_notices import AUDIENCE
from app.extensions import db
from app.models.usage import PLAN_KINDS, PLAN_SIZES, Plan
from app.web.admin import bp
from app.web.helpers import admin_required, is_htmx, render_page_or_block

EFFECTIVE_FORMATS = ("%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S")


class PriceForm(FlaskForm):
    hourly_price = StringField("New hourly price", validators=[DataRequired(message="Enter a price.")])
    effective_at = StringField("Effective from (UTC, empty = now)", validators=[Optional(), Length(max=25)])
    confirmed = HiddenField()


class PlanForm(FlaskForm):
    kind = SelectField("Kind", choices=[(k, k) for k in PLAN_KINDS])
    size = StringField("Size", validators=[DataRequired(message="Enter a size."), Length(max=20)],
                       default=PLAN_SIZES[0])
    public_ip = BooleanField("Public IP")
    hourly_price = StringField("Hourly price", validators=[DataRequired(message="Enter a price.")])


def _parse_effective(text: str | None) -> datetime | None:
    try:
        return parse_datetime_utc(text, EFFECTIVE_FORMATS, "2026-11-01T00:00", "Effective time")
    except InvalidPeriod as exc:
        raise pricing.InvalidPrice(str(exc)) from None


def _render_index(plan_form=None, status=200):
    return render_page_or_block(
        "admin/pricing.html",
        "plans",
        rows=pricing.list_plans(db.session),
        plan_form=plan_form or PlanForm(),
    ), status


@bp.route("/pricing", endpoint="pricing")
@admin_required
def pricing_index():
    return _render_index()


@bp.post("/pricing/plans")
@admin_required
def create_plan():
    form = PlanForm()
    if form.validate_on_submit():
        try:
            plan = pricing.create_plan(
                db.session, current_user.id, kind=form.kind.data, size=form.size.data,
                public_ip=form.public_ip.data, hourly_price=form.hourly_price.data,
            )
        except pricing.PricingError as exc:
            form.hourly_price.errors = [*form.hourly_price.errors, str(exc)]
        else:
            flash(f"Plan {plan.name} created.", "success")
            return redirect(url_for("admin.pricing"), 303)
    return _render_index(plan_form=form, status=422)


def _plan_or_404(plan_id: int) -> Plan:
    plan = db.session.get(Plan, plan_id)
    if plan is None:
        abort(404)
    return plan


def _render_plan(plan: Plan, form: PriceForm, status: int = 200, preview: pricing.PriceChangePreview | None = None):
    return render_page_or_block(
        "admin/pricing_plan.html",
        "price_form",
        plan=plan,
        form=form,
        history=pricing.price_history(db.session, plan.id),
        now=datetime.now(UTC),
        preview=preview,
        audience=AUDIENCE,
    ), status


@bp.route("/pricing/<id:plan_id>")
@admin_required
def pricing_plan(plan_id: int):
    return _render_plan(_plan_or_404(plan_id), PriceForm())


@bp.post("/pricing/<id:plan_id>/price")
@admin_required
def change_price(plan_id: int):
    plan = _plan_or_404(plan_id)
    form = PriceForm()
    valid = form.validate_on_submit()
    # every field parsed, so that each one's errors show at once
    price = effective_at = None
    if form.hourly_price.data:
        try:
            price = pricing.parse_hourly_price(form.hourly_price.data)
        except pricing.PricingError as exc:
            form.hourly_price.errors = [*form.hourly_price.errors, str(exc)]
    try:
        effective_at = _parse_effective(form.effective_at.data)
    except pricing.PricingError as exc:
        form.effective_at.errors = [*form.effective_at.errors, str(exc)]
    if valid and price is not None and not form.effective_at.errors:
        try:
            if form.confirmed.data != "yes":
                # First step: show what will happen (how many customers are told) and ask to confirm.
                preview = pricing.preview_price_change(db.session, plan.id, price, effective_at)
                form.confirmed.data = "yes"
                return _render_plan(plan, form, preview=preview)
            version = pricing.change_price(db.session, current_user.id, plan.id, price, effective_at)
        except pricing.PricingError as exc:
            form.confirmed.data = ""
            form.hourly_price.errors = [*form.hourly_price.errors, str(exc)]
        else:
            flash(f"{plan.name}: {format_unit_price(version.hourly_price)} per hour from "
                  f"{version.effective_at:%Y-%m-%d %H:%M} UTC.", "success")
            return redirect(url_for("admin.pricing_plan", plan_id=plan.id), 303)
    return _render_plan(plan, form, status=422)


@bp.post("/pricing/<id:plan_id>/prices/<id:version_id>/cancel")
@admin_required
def cancel_price(plan_id: int, version_id: int):
    plan = _plan_or_404(plan_id)
    try:
        version = pricing.cancel_scheduled_price(db.session, current_user.id, plan.id, version_id)
    except pricing.PriceAlreadyInEffect as exc:
        flash(str(exc), "error")
        status = 409
    else:
        flash(f"{plan.name}: the price of {format_unit_price(version.hourly_price)} per hour scheduled for "
              f"{version.effective_at:%Y-%m-%d %H:%M} UTC was cancelled.", "success")
        status = 200
    if is_htmx():
        return _render_plan(plan, PriceForm(formdata=None), status=status)
    return redirect(url_for("admin.pricing_plan", plan_id=plan.id), 303)
