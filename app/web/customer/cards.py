"""Cards pages (Stripe issue)."""

from flask import flash, redirect, url_for
from flask_login import current_user

from app.billing import cards as card_service
from app.billing.card_attempts import declining_default_card
from app.extensions import db
from app.models import Card
from app.models.base import utcnow
from app.payments.gateway import PaymentError
from app.web.customer import bp
from app.web.helpers import customer_required, is_htmx, owned_or_404, render_page_or_block
from app.web.stripe import checkout_urls


def _render(status: int = 200):
    cards = card_service.active_cards(db.session, current_user.id)
    body = render_page_or_block(
        "customer/cards.html", "card_list", cards=cards, now=utcnow(),
        declining=declining_default_card(db.session, current_user.id, active_cards=cards),
    )
    return body, status


def _after_change(status: int = 200):
    """HTMX: the refreshed list (+ flashes); without JS: back to the page (303)."""
    if is_htmx():
        return _render(status)
    return redirect(url_for("customer.cards"), 303)


@bp.get("/cards")
@customer_required
def cards():
    return _render()


@bp.post("/cards/add")
@customer_required
def add_card():
    try:
        url = card_service.start_card_setup(db.session, current_user.id, **checkout_urls("card"))
    except PaymentError as exc:
        flash(str(exc), "error")
        return redirect(url_for("customer.cards"), 303)
    return redirect(url, 303)


@bp.post("/cards/<id:card_id>/default")
@customer_required
def set_default_card(card_id: int):
    card = owned_or_404(db.session, Card, card_id, current_user.id)
    try:
        card_service.set_default_card(db.session, current_user.id, card.id)
    except card_service.CardError as exc:
        flash(str(exc), "error")
        return _after_change(409)
    flash(f"{card.brand.title()} ending in {card.last4} is now your default card.", "success")
    return _after_change()


@bp.post("/cards/<id:card_id>/remove")
@customer_required
def remove_card(card_id: int):
    card = owned_or_404(db.session, Card, card_id, current_user.id)
    try:
        card_service.remove_card(db.session, current_user.id, card.id)
    except card_service.CardError as exc:
        flash(str(exc), "error")
        return _after_change(409)
    except PaymentError as exc:
        flash(str(exc), "error")
        return _after_change(409)
    flash(f"{card.brand.title()} ending in {card.last4} was removed.", "success")
    return _after_change()
