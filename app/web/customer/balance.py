"""Balance top-up pages: a saved card (off-session charge) or a new card (Stripe Checkout)."""

import secrets

from flask import current_app, flash, redirect, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import HiddenField, RadioField, StringField
from wtforms.validators import DataRequired

from app.billing import card_topups, topups
from app.billing.accounts_view import dashboard_figures
from app.billing.cards import usable_cards
from app.billing.foresight import amount_input_text
from app.billing.money import InvalidAmount, format_money
from app.billing.money_input import MAX_CENTS, parse_money_cents
from app.extensions import db
from app.payments.gateway import PaymentError
from app.web.customer import bp
from app.web.helpers import customer_required, is_htmx, render_page_or_block
from app.web.stripe import checkout_urls

NEW_CARD = "new"


class TopupForm(FlaskForm):
    amount = StringField("Amount", validators=[DataRequired(message="Enter an amount.")])
    pay_with = RadioField("Pay with", default=NEW_CARD, validate_choice=False)
    request_token = HiddenField()


def _form(cards, formdata=None) -> TopupForm:
    """The top-up form with the customer's usable cards as choices (the default card preselected)
    and a fresh one-time request token (the idempotency of a saved-card charge)."""
    form = TopupForm() if formdata is None else TopupForm(formdata=formdata)
    form.pay_with.choices = [(str(c.id), card_topups.card_label(c)) for c in cards] + [(NEW_CARD, "A new card")]
    if formdata is None:
        form.pay_with.data = str(cards[0].id) if cards else NEW_CARD
    return form


def _render(form: TopupForm, cards, status: int = 200, *, same_request: bool = False):
    """`same_request`: keep the form's token, so that submitting again repeats the same charge
    request (Stripe answers with the first outcome) instead of making a new one."""
    if not (same_request and form.request_token.data):
        form.request_token.data = secrets.token_urlsafe(24)  # otherwise every rendering is a new request
    body = render_page_or_block(
        "customer/balance.html",
        "topup_form",
        form=form,
        cards=cards,
        figures=dashboard_figures(db.session, current_user.id),
        topups=topups.recent_topups(db.session, current_user.id),
        min_cents=current_app.config["TOPUP_MIN_CENTS"],
        max_cents=current_app.config["TOPUP_MAX_CENTS"],
    )
    return body, status


def _go(url: str):
    """Leave the page: HTMX follows HX-Redirect, a plain form post a 303."""
    if is_htmx():
        return "", 204, {"HX-Redirect": url}
    return redirect(url, 303)


@bp.get("/balance")
@customer_required
def balance():
    """`?amount=12.34` prefills the amount (the dashboard's suggested top-up); an amount that does not
    parse is ignored."""
    cards = usable_cards(db.session, current_user.id)
    form = _form(cards)
    suggested = request.args.get("amount")
    if suggested:
        try:
            form.amount.data = amount_input_text(parse_money_cents(suggested, max_cents=MAX_CENTS))
        except InvalidAmount:
            pass
    return _render(form, cards)


@bp.post("/balance/topup")
@customer_required
def start_topup():
    cards = usable_cards(db.session, current_user.id)
    form = TopupForm()
    form.pay_with.choices = [(str(c.id), card_topups.card_label(c)) for c in cards] + [(NEW_CARD, "A new card")]
    if not form.validate_on_submit():
        return _render(form, cards, 400)
    try:
        # the TOPUP_MIN/MAX_CENTS bounds are the service's (with their own messages)
        amount_cents = parse_money_cents(form.amount.data, max_cents=MAX_CENTS)
    except InvalidAmount as exc:
        form.amount.errors.append(str(exc))
        return _render(form, cards, 400)
    choice = form.pay_with.data or NEW_CARD
    try:
        if choice == NEW_CARD:
            return _go(topups.start_topup(db.session, current_user.id, amount_cents, **checkout_urls("topup")))
        if not choice.isdigit() or len(choice) > 12:
            raise card_topups.InvalidTopupRequest("Choose one of your saved cards, or pay with a new card.")
        result = card_topups.top_up_with_saved_card(
            db.session, current_user.id, int(choice), amount_cents, form.request_token.data or "",
            **checkout_urls("topup"),
        )
    except topups.TopupAmountOutOfRange as exc:
        form.amount.errors.append(str(exc))
        return _render(form, cards, 400)
    except card_topups.CardTopupNeedsAuthentication as exc:
        return _go(exc.checkout_url)  # 3-D Secure: the customer confirms on Checkout
    except card_topups.CardTopupInProgress as exc:
        flash(str(exc), "info")
        return _render(form, cards, 202, same_request=True)
    except (card_topups.CardTopupDeclined, card_topups.InvalidTopupRequest) as exc:
        form.pay_with.errors = [*form.pay_with.errors, str(exc)]
        return _render(form, cards, 402 if isinstance(exc, card_topups.CardTopupDeclined) else 400)
    except PaymentError as exc:
        flash(str(exc), "error")
        return _render(form, cards, 409)
    flash(f"Thank you: {result.card_label} was charged {format_money(result.amount_cents)}; "
          "it was added to your balance.", "success")
    return _go(url_for("customer.balance"))
