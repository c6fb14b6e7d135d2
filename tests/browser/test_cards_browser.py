import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.models import Card

pytestmark = pytest.mark.browser


def _login(page, email, password="correct-horse-battery"):
    page.goto("/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#login-submit")
    expect(page).to_have_url(re.compile(r"/dashboard$"))


def _add_card(page, number, exp="12/34"):
    page.goto("/cards")
    page.click("#add-card")
    expect(page.locator("#cardnumber")).to_be_visible()
    page.fill("#cardnumber", number)
    page.fill("#exp", exp)
    page.fill("#cvc", "123")
    page.click("#submit")


def _rows(page):
    return page.locator("#card-list tr.card-row")


def _active_cards(session, customer_id):
    session.expire_all()
    return session.scalars(select(Card).where(Card.customer_id == customer_id, Card.removed_at.is_(None))).all()


def test_cards_added_defaulted_deduplicated_and_removed_through_hosted_checkout(page, factory, session, stripe):
    customer = factory.customer(email="browser-cards@example.com")
    _login(page, customer.email)

    _add_card(page, "4242 4242 4242 4242")
    expect(page).to_have_url(re.compile(r"/cards$"))
    expect(page.locator("#flashes")).to_contain_text("Card saved: Visa ending in 4242.")
    expect(_rows(page)).to_have_count(1)
    expect(_rows(page).first.locator(".badge-default")).to_be_visible()

    _add_card(page, "5555 5555 5555 4444")
    expect(_rows(page)).to_have_count(2)
    second = page.locator("#card-list tr.card-row", has_text="4444")
    expect(second.locator(".badge-default")).to_have_count(0)
    second.locator("button.set-default").click()
    expect(page.locator("#flashes")).to_contain_text("ending in 4444 is now your default card.")
    expect(page.locator("#card-list tr.card-row", has_text="4444").locator(".badge-default")).to_be_visible()
    expect(page.locator("#card-list tr.card-row", has_text="4242").locator(".badge-default")).to_have_count(0)

    _add_card(page, "4242424242424242", exp="11/33")
    expect(page.locator("#flashes")).to_contain_text("This card is already on your account.")
    expect(_rows(page)).to_have_count(2)
    assert len(_active_cards(session, customer.id)) == 2

    page.on("dialog", lambda dialog: dialog.accept())
    page.locator("#card-list tr.card-row", has_text="4242").locator("button.remove-card").click()
    expect(page.locator("#flashes")).to_contain_text("ending in 4242 was removed.")
    expect(_rows(page)).to_have_count(1)
    [left] = _active_cards(session, customer.id)
    assert left.last4 == "4444" and left.is_default


def test_a_declined_card_is_explained_and_leaves_no_card(page, factory, session, stripe):
    customer = factory.customer(email="browser-declined@example.com")
    _login(page, customer.email)
    _add_card(page, "4000 0000 0000 0002")
    expect(page.locator("#error")).to_have_text("Your card was declined.")
    page.click("#cancel")
    expect(page).to_have_url(re.compile(r"/cards$"))
    expect(page.locator("#flashes")).to_contain_text("Nothing was saved.")
    expect(page.locator("#no-cards")).to_be_visible()
    assert _active_cards(session, customer.id) == []
