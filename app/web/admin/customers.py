"""Admin customer pages (money core; the dunning issue adds its panel): search, detail with
ledger, invoices and cards, cash balance adjustment with a reason."""

import secrets

from flask import abort, flash, redirect, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from jinja2_fragments.flask import render_block
from sqlalchemy import func, or_, select
from wtforms import HiddenField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from app.billing import spending_limits
from app.billing.activity import activity_page
from app.billing.adjustments import AdjustmentError, adjust_cash_balance
from app.billing.foresight import amount_input_text, customer_forecast
from app.billing.money import InvalidAmount, format_money
from app.billing.money_input import configured_max_cents, parse_money_cents
from app.billing.notifications import notifications_of
from app.extensions import db
from app.models import Card, Invoice, LedgerEntry, User
from app.web.admin import bp
from app.web.helpers import admin_required, id_from_text, is_htmx, page_number, render_page_or_block

PAGE_SIZE = 50


class AdjustmentForm(FlaskForm):
    amount = StringField("Amount (prefix with - to debit)", validators=[DataRequired(message="Enter an amount.")])
    reason = TextAreaField("Reason (the customer sees it in their activity)", validators=[DataRequired(message="Give a reason."), Length(max=500)])
    request_key = HiddenField(validators=[Length(max=64, message="This form is out of date; reload the page.")])


@bp.get("/customers")
@admin_required
def customers():
    q = (request.args.get("q") or "").strip()
    query = select(User).where(User.is_admin.is_(False))
    if q:
        like = q.lower()
        conditions = [func.lower(User.email).contains(like), func.lower(func.coalesce(User.name, "")).contains(like),
                      func.lower(func.coalesce(User.company, "")).contains(like)]
        if (typed_id := id_from_text(q)) is not None:
            conditions.append(User.id == typed_id)
        query = query.where(or_(*conditions))
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    page = page_number((total + PAGE_SIZE - 1) // PAGE_SIZE)
    rows = list(db.session.scalars(query.order_by(User.email).offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)))
    return render_page_or_block(
        "admin/customers.html", "customer_table", customers=rows, q=q, page=page,
        pages=max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1), total=total,
    )


def _customer_or_404(customer_id: int) -> User:
    customer = db.session.get(User, customer_id)
    if customer is None or customer.is_admin:
        abort(404)
    return customer


class CeilingForm(FlaskForm):
    ceiling = StringField("Spending ceiling per month (before tax; empty = none)", validators=[Length(max=32)])


def _render_detail(customer: User, form: AdjustmentForm | None = None, status: int = 200,
                   ceiling_form: CeilingForm | None = None):
    form = form or AdjustmentForm()
    limit = spending_limits.spending_limit(db.session, customer.id)
    if ceiling_form is None:
        ceiling_form = CeilingForm(formdata=None)
        if limit is not None and limit.admin_ceiling_cents is not None:
            ceiling_form.ceiling.data = amount_input_text(limit.admin_ceiling_cents)
    if not form.request_key.data:
        form.request_key.data = secrets.token_urlsafe(16)
    session = db.session
    body = render_page_or_block(
        "admin/customer_detail.html", "adjustment_panel", customer=customer, form=form,
        ledger=list(session.scalars(select(LedgerEntry).where(LedgerEntry.customer_id == customer.id)
                                    .order_by(LedgerEntry.id.desc()).limit(100))),
        invoices=list(session.scalars(select(Invoice).where(Invoice.customer_id == customer.id)
                                      .order_by(Invoice.id.desc()).limit(100))),
        cards=list(session.scalars(select(Card).where(Card.customer_id == customer.id)
                                   .order_by(Card.is_default.desc(), Card.created_at.desc()))),
        activity=activity_page(session, customer.id),
        forecast=customer_forecast(session, customer.id), ceiling_form=ceiling_form, spending_limit=limit,
        emails=notifications_of(session, customer.id, limit=50),
    )
    return body, status


@bp.get("/customers/<id:customer_id>")
@admin_required
def customer_detail(customer_id: int):
    return _render_detail(_customer_or_404(customer_id))


@bp.post("/customers/<id:customer_id>/adjust")
@admin_required
def adjust_balance(customer_id: int):
    customer = _customer_or_404(customer_id)
    form = AdjustmentForm()
    valid = form.validate_on_submit()
    amount = None
    if form.amount.data:  # parsed even when another field is wrong: every field's errors at once
        try:
            amount = parse_money_cents(form.amount.data, min_cents=1, allow_negative=True,
                                       max_cents=configured_max_cents("ADJUSTMENT_MAX_CENTS", 10_000_000))
        except InvalidAmount as exc:
            form.amount.errors = [*form.amount.errors, str(exc)]
    if not valid or amount is None:
        return _render_detail(customer, form, 400)
    try:
        adjust_cash_balance(db.session, actor_id=current_user.id, customer_id=customer.id, amount_cents=amount,
                            reason=form.reason.data, request_key=form.request_key.data or secrets.token_urlsafe(16))
    except AdjustmentError as exc:
        form.amount.errors.append(str(exc))
        return _render_detail(customer, form, 409)
    flash(f"Adjusted the cash balance of {customer.email} by {format_money(amount)}.", "success")
    if is_htmx():
        # in place: a fresh form, the figures as an out-of-band swap, the flash
        db.session.refresh(customer)
        body, _ = _render_detail(customer, AdjustmentForm(formdata=None))
        figures = render_block("admin/customer_detail.html", "customer_figures", customer=customer, oob=True)
        return body + figures, 200
    return redirect(url_for("admin.customer_detail", customer_id=customer.id), 303)


@bp.post("/customers/<id:customer_id>/spending-ceiling")
@admin_required
def set_spending_ceiling(customer_id: int):
    """Cap the customer's monthly spending limit (audited); empty removes the cap."""
    customer = _customer_or_404(customer_id)
    form = CeilingForm()
    if not form.validate_on_submit():
        return _render_detail(customer, status=400, ceiling_form=form)
    text = (form.ceiling.data or "").strip()
    try:
        cents = parse_money_cents(text, max_cents=spending_limits.MAX_LIMIT_CENTS) if text else None
        spending_limits.set_admin_ceiling(db.session, current_user.id, customer.id, cents)
    except InvalidAmount:
        form.ceiling.errors = [*form.ceiling.errors, "Enter an amount like 500.00, or leave it empty for no ceiling."]
        return _render_detail(customer, status=400, ceiling_form=form)
    except spending_limits.SpendingLimitError as exc:
        form.ceiling.errors = [*form.ceiling.errors, str(exc)]
        return _render_detail(customer, status=400, ceiling_form=form)
    flash(f"Spending ceiling of {customer.email} set to {format_money(cents)}." if cents is not None
          else f"Spending ceiling of {customer.email} removed.", "success")
    return redirect(url_for("admin.customer_detail", customer_id=customer.id), 303)
