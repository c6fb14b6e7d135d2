"""Admin: refund a customer's unspent cash balance to their cards (Stripe issue)."""

import secrets

from flask import flash, redirect, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from wtforms import HiddenField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from app.billing import refunds as refund_service
from app.billing.money import format_money
from app.billing.money_input import MAX_CENTS
from app.extensions import db
from app.models import User
from app.web.admin import bp
from app.web.helpers import admin_required, id_from_text, parse_money_field, render_page_or_block


class RefundForm(FlaskForm):
    amount = StringField("Amount to refund", validators=[DataRequired(message="Enter an amount.")])
    reason = TextAreaField("Reason", validators=[DataRequired(message="Give a reason."), Length(max=2000)])
    request_key = HiddenField(validators=[Length(max=64, message="This form is out of date; reload the page.")])


def _customer(customer_id) -> User | None:
    if customer_id in (None, ""):
        return None
    customer_id = customer_id if isinstance(customer_id, int) else id_from_text(str(customer_id))
    user = db.session.get(User, customer_id) if customer_id is not None else None
    return user if user is not None and not user.is_admin else None


def _render(customer: User | None, form: RefundForm, status: int = 200, query: str = ""):
    session = db.session
    matches = []
    if query and customer is None:
        matches = list(
            session.scalars(
                select(User)
                .where(User.is_admin.is_(False), func.lower(User.email).contains(query.lower()))
                .order_by(User.email)
                .limit(20)
            )
        )
    if not form.request_key.data:
        form.request_key.data = secrets.token_urlsafe(16)
    body = render_page_or_block(
        "admin/refunds.html",
        "refund_form",
        customer=customer,
        form=form,
        query=query,
        matches=matches,
        refundable_cents=refund_service.refundable_cents(session, customer.id) if customer else 0,
        refunds=refund_service.recent_refunds(session, customer.id if customer else None),
    )
    return body, status


@bp.get("/refunds")
@admin_required
def refunds():
    return _render(_customer(request.args.get("customer_id")), RefundForm(), query=request.args.get("q", "").strip())


@bp.post("/refunds/<id:customer_id>")
@admin_required
def refund_cash(customer_id: int):
    customer = _customer(customer_id)
    if customer is None:
        return redirect(url_for("admin.refunds"), 303)
    form = RefundForm()
    valid = form.validate_on_submit()
    amount_cents = parse_money_field(form.amount, min_cents=1, max_cents=MAX_CENTS)  # errors of all fields at once
    if not valid or amount_cents is None:
        return _render(customer, form, 400)
    try:
        outcome = refund_service.refund_cash_balance(
            db.session,
            actor_id=current_user.id,
            customer_id=customer.id,
            amount_cents=amount_cents,
            reason=form.reason.data,
            request_key=form.request_key.data or secrets.token_urlsafe(16),
        )
    except refund_service.RefundError as exc:
        form.amount.errors.append(str(exc))
        return _render(customer, form, 400)
    if outcome.refunded_cents:
        flash(f"Refunded {format_money(outcome.refunded_cents)} to {customer.email}.", "success")
    if outcome.pending_cents:
        flash(f"{format_money(outcome.pending_cents)} is waiting for Stripe; it will be retried automatically.", "info")
    if outcome.failed_cents:
        flash(f"Stripe refused {format_money(outcome.failed_cents)}; it was credited back to the balance.", "error")
    return redirect(url_for("admin.refunds", customer_id=customer.id), 303)
