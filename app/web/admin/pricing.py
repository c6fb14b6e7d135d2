"""Admin pricing pages: plans, price versions and history; issuing a customer's usage invoice by hand."""

from datetime import UTC, datetime

from flask import abort, flash, redirect, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from wtforms import BooleanField, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional, Regexp

from app.billing import monthly, pricing
from app.extensions import db
from app.models import User
from app.models.usage import PLAN_KINDS, PLAN_SIZES, Plan
from app.web.admin import bp
from app.web.helpers import admin_required, render_page_or_block

EFFECTIVE_FORMATS = ("%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S")


class PriceForm(FlaskForm):
    hourly_price = StringField("New hourly price", validators=[DataRequired(message="Enter a price.")])
    effective_at = StringField("Effective from (UTC, empty = now)", validators=[Optional(), Length(max=25)])


class PlanForm(FlaskForm):
    kind = SelectField("Kind", choices=[(k, k) for k in PLAN_KINDS])
    size = StringField("Size", validators=[DataRequired(message="Enter a size."), Length(max=20)],
                       default=PLAN_SIZES[0])
    public_ip = BooleanField("Public IP")
    hourly_price = StringField("Hourly price", validators=[DataRequired(message="Enter a price.")])


class UsageInvoiceForm(FlaskForm):
    customer_email = StringField("Customer email", validators=[DataRequired(message="Enter the customer's email.")])
    period = StringField("Period", validators=[DataRequired(), Regexp(r"^\d{4}-\d{2}$", message="Use YYYY-MM.")])


def _parse_effective(text: str | None) -> datetime | None:
    if not text:
        return None
    for fmt in EFFECTIVE_FORMATS:
        try:
            return datetime.strptime(text.strip(), fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise pricing.InvalidPrice("Effective time must look like 2026-11-01T00:00 (UTC).")


def _render_index(plan_form=None, invoice_form=None, status=200):
    return render_page_or_block(
        "admin/pricing.html",
        "plans",
        rows=pricing.list_plans(db.session),
        plan_form=plan_form or PlanForm(),
        invoice_form=invoice_form or UsageInvoiceForm(),
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


def _render_plan(plan: Plan, form: PriceForm, status: int = 200):
    return render_page_or_block(
        "admin/pricing_plan.html",
        "price_form",
        plan=plan,
        form=form,
        history=pricing.price_history(db.session, plan.id),
        now=datetime.now(UTC),
    ), status


@bp.route("/pricing/<int:plan_id>")
@admin_required
def pricing_plan(plan_id: int):
    return _render_plan(_plan_or_404(plan_id), PriceForm())


@bp.post("/pricing/<int:plan_id>/price")
@admin_required
def change_price(plan_id: int):
    plan = _plan_or_404(plan_id)
    form = PriceForm()
    if form.validate_on_submit():
        try:
            version = pricing.change_price(
                db.session, current_user.id, plan.id, form.hourly_price.data, _parse_effective(form.effective_at.data)
            )
        except pricing.PricingError as exc:
            form.hourly_price.errors = [*form.hourly_price.errors, str(exc)]
        else:
            flash(f"{plan.name}: {version.hourly_price:.6f} per hour from "
                  f"{version.effective_at:%Y-%m-%d %H:%M} UTC.", "success")
            return redirect(url_for("admin.pricing_plan", plan_id=plan.id), 303)
    return _render_plan(plan, form, status=422)


@bp.post("/pricing/usage-invoice")
@admin_required
def issue_usage_invoice():
    form = UsageInvoiceForm()
    if form.validate_on_submit():
        customer = db.session.scalar(
            select(User).where(func.lower(User.email) == form.customer_email.data.strip().lower(),
                               User.is_admin.is_(False))
        )
        if customer is None:
            form.customer_email.errors = [*form.customer_email.errors, "No customer with that email."]
        else:
            try:
                invoice = monthly.issue_customer_invoice(db.session, customer.id, form.period.data,
                                                         actor_id=current_user.id)
            except (monthly.InvoicingError, ValueError) as exc:
                form.period.errors = [*form.period.errors, str(exc)]
            else:
                what = form.period.data
                if monthly.is_month_to_date(invoice):
                    what += f", month to date up to {invoice.period_end:%Y-%m-%d %H:%M:%S} UTC (the rest is billed later)"
                flash(f"Invoice {invoice.number} issued to {customer.email} for {what}.", "success")
                return redirect(url_for("admin.pricing"), 303)
    return _render_index(invoice_form=form, status=422)
