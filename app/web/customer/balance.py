"""Balance top-up pages (Stripe issue)."""

from flask import current_app, flash, redirect
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired

from app.billing import topups
from app.billing.accounts_view import dashboard_figures
from app.billing.money import InvalidAmount
from app.billing.money_input import MAX_CENTS, parse_money_cents
from app.extensions import db
from app.payments.gateway import PaymentError
from app.web.customer import bp
from app.web.helpers import customer_required, render_page_or_block
from app.web.stripe import checkout_urls


class TopupForm(FlaskForm):
    amount = StringField("Amount", validators=[DataRequired(message="Enter an amount.")])


def _render(form: TopupForm, status: int = 200):
    body = render_page_or_block(
        "customer/balance.html",
        "topup_form",
        form=form,
        figures=dashboard_figures(db.session, current_user.id),
        topups=topups.recent_topups(db.session, current_user.id),
        min_cents=current_app.config["TOPUP_MIN_CENTS"],
        max_cents=current_app.config["TOPUP_MAX_CENTS"],
    )
    return body, status


@bp.get("/balance")
@customer_required
def balance():
    return _render(TopupForm())


@bp.post("/balance/topup")
@customer_required
def start_topup():
    form = TopupForm()
    if not form.validate_on_submit():
        return _render(form, 400)
    try:
        # the TOPUP_MIN/MAX_CENTS bounds are the service's (with their own messages)
        amount_cents = parse_money_cents(form.amount.data, max_cents=MAX_CENTS)
        url = topups.start_topup(db.session, current_user.id, amount_cents, **checkout_urls("topup"))
    except InvalidAmount as exc:
        form.amount.errors.append(str(exc))
        return _render(form, 400)
    except topups.TopupAmountOutOfRange as exc:
        form.amount.errors.append(str(exc))
        return _render(form, 400)
    except PaymentError as exc:
        flash(str(exc), "error")
        return _render(form, 409)
    return redirect(url, 303)
