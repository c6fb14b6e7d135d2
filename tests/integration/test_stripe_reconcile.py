import pytest
from sqlalchemy import func, select

from app.models import Card, User
from app.models.stripe_events import StripeEvent
from jobs.queue import enqueue
from jobs.stripe_events import reconcile_stripe_events
from tests.conftest import get_csrf, login
from tests.stripe_support import cash_entries, pay_checkout

pytestmark = pytest.mark.integration


@pytest.fixture
def webhooks_off(app, stripe_emulator):
    """The emulator wiped with no webhook endpoint: every event is 'missed'."""
    stripe_emulator.reset()
    yield stripe_emulator
    stripe_emulator.clear_faults()


@pytest.fixture
def customer(factory, client):
    user = factory.customer(email="missed@example.com")
    login(client, user.email)
    return user


def test_a_missed_topup_webhook_is_credited_by_the_events_job_once(client, session, webhooks_off, customer, worker):
    response = client.post("/balance/topup", data={"amount": "25.00", "csrf_token": get_csrf(client, "/balance")})
    assert pay_checkout(response.headers["Location"]).status_code == 303  # the customer never comes back
    assert cash_entries(session, customer.id) == []

    # the periodic job, run by a real RQ worker
    assert enqueue(reconcile_stripe_events)
    worker.run_burst()
    session.expire_all()
    assert session.get(User, customer.id).cash_balance_cents == 2500
    assert [e.amount_cents for e in cash_entries(session, customer.id)] == [2500]
    events_after_first = session.scalar(select(func.count(StripeEvent.id)))
    assert events_after_first >= 2  # checkout.session.completed, payment_intent.succeeded, …
    assert session.scalar(select(func.count(StripeEvent.id)).where(StripeEvent.source != "reconcile")) == 0

    assert reconcile_stripe_events() == 0
    session.expire_all()
    assert session.get(User, customer.id).cash_balance_cents == 2500
    assert len(cash_entries(session, customer.id)) == 1
    assert session.scalar(select(func.count(StripeEvent.id))) == events_after_first


def test_a_missed_card_setup_is_recorded_by_the_events_job(client, session, webhooks_off, customer):
    response = client.post("/cards/add", data={"csrf_token": get_csrf(client, "/cards")})
    assert pay_checkout(response.headers["Location"]).status_code == 303
    reconcile_stripe_events()
    reconcile_stripe_events()
    session.expire_all()
    [card] = session.scalars(select(Card).where(Card.customer_id == customer.id)).all()
    assert card.last4 == "4242" and card.is_default


def test_the_events_job_fails_cleanly_when_stripe_is_down_and_writes_nothing(session, webhooks_off, customer):
    from app.payments.gateway import PaymentProviderUnavailable

    webhooks_off.set_fault("/v1/events", "error", method="GET")
    with pytest.raises(PaymentProviderUnavailable):
        reconcile_stripe_events()
    assert session.scalar(select(func.count(StripeEvent.id))) == 0
