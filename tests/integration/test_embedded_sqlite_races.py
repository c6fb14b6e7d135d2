"""The embedded default runs on SQLite, where FOR UPDATE does nothing: the Checkout success
redirect and the webhook recording the same card at once must still end with one card."""

import threading

import pytest
from sqlalchemy import func, select

from app.payments.gateway import PaymentMethodInfo

pytestmark = pytest.mark.integration


@pytest.fixture
def sqlite_app(tmp_path):
    from app import create_app
    from app.migrate import upgrade_database

    url = f"sqlite:///{tmp_path}/paydesk.sqlite3"
    upgrade_database(url)
    application = create_app({"DATABASE_URL": url, "JOBS_MODE": "inline", "REDIS_URL": None, "TESTING": True})
    yield application
    application.extensions["paydesk_engine"].dispose()


def test_redirect_and_webhook_recording_one_card_at_once_keep_one_card(sqlite_app):
    from app import accounts
    from app.billing.cards import record_payment_method
    from app.extensions import db
    from app.models import Card

    with sqlite_app.app_context():
        customer_id = accounts.create_user(db.new_session(), "race@example.com", "race-password-1").id
    pm = PaymentMethodInfo("pm_race", "cus_race", "fp_race", "visa", "4242", 12, 2030)
    barrier = threading.Barrier(2)
    errors = []

    def record():
        with sqlite_app.app_context():
            session = db.new_session()
            try:
                barrier.wait()
                record_payment_method(session, customer_id, pm)
                session.commit()
            except Exception as exc:  # noqa: BLE001 - the test asserts there were none
                errors.append(exc)
            finally:
                session.close()

    threads = [threading.Thread(target=record) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with sqlite_app.app_context():
        session = db.new_session()
        assert session.scalar(select(func.count(Card.id))) == 1
        assert session.scalar(select(Card.is_default)) is True
