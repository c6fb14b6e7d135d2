"""request_settlement: the outbox row is always written; the RQ enqueue coalesces while a job
enqueued moments ago for the still-waiting row has not been superseded."""

from datetime import timedelta

import pytest
from sqlalchemy import delete, update

from app.billing.settlement import settle_customer
from app.billing.settlement_requests import ENQUEUE_COALESCE_SECONDS, request_settlement
from app.models import SettlementRequest
from app.models.base import utcnow
from jobs.queue import SETTLEMENT_QUEUE, get_queue

pytestmark = pytest.mark.integration


def queued_customers() -> list[int]:
    return [job.args[0] for job in get_queue(SETTLEMENT_QUEUE).get_jobs()]


def request(session, customer_id: int) -> None:
    request_settlement(session, customer_id)
    session.commit()


def row(session, customer_id: int) -> SettlementRequest | None:
    session.expire_all()
    return session.get(SettlementRequest, customer_id)


def test_the_first_request_enqueues_and_a_second_one_while_it_waits_only_moves_the_generation(session, factory):
    customer = factory.customer()
    get_queue(SETTLEMENT_QUEUE).empty()

    request(session, customer.id)
    first = row(session, customer.id)
    assert queued_customers() == [customer.id]
    assert first.generation == 1 and first.enqueued_at is not None

    request(session, customer.id)
    second = row(session, customer.id)
    assert queued_customers() == [customer.id]
    assert second.generation == 2
    assert second.enqueued_at == first.enqueued_at
    assert second.requested_at >= first.requested_at


def test_a_request_after_the_coalescing_window_enqueues_again(session, factory):
    customer = factory.customer()
    get_queue(SETTLEMENT_QUEUE).empty()
    request(session, customer.id)
    long_ago = utcnow() - timedelta(seconds=ENQUEUE_COALESCE_SECONDS + 1)
    session.execute(update(SettlementRequest).values(enqueued_at=long_ago))
    session.commit()

    request(session, customer.id)

    assert queued_customers() == [customer.id, customer.id]
    assert row(session, customer.id).enqueued_at > long_ago


def test_a_request_after_the_job_cleared_the_row_enqueues_again(session, factory):
    customer = factory.customer()
    get_queue(SETTLEMENT_QUEUE).empty()
    request(session, customer.id)
    report = settle_customer(session, customer.id, only_if_requested=True)
    assert report.request_cleared and row(session, customer.id) is None

    request(session, customer.id)

    assert queued_customers() == [customer.id, customer.id]
    assert row(session, customer.id).generation == 1


def test_a_rolled_back_request_enqueues_nothing_and_claims_nothing(session, factory):
    customer = factory.customer()
    get_queue(SETTLEMENT_QUEUE).empty()
    request_settlement(session, customer.id)
    session.rollback()
    assert queued_customers() == []
    assert row(session, customer.id) is None

    request(session, customer.id)
    assert queued_customers() == [customer.id]


def test_requests_for_different_customers_each_enqueue(session, factory):
    one, two = factory.customer(), factory.customer()
    get_queue(SETTLEMENT_QUEUE).empty()
    request_settlement(session, one.id)
    request_settlement(session, two.id)
    request_settlement(session, one.id)
    session.commit()
    assert sorted(queued_customers()) == sorted([one.id, two.id])


def test_coalescing_works_on_sqlite_too(tmp_path):
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    from app.migrate import upgrade_database

    url = f"sqlite:///{tmp_path / 'coalesce.sqlite3'}"
    upgrade_database(url)
    engine = create_engine(url)
    with Session(engine) as session:
        session.execute(
            text(
                "INSERT INTO users (id, email, password_hash, is_admin, created_at, cash_balance_cents, "
                "voucher_balance_cents, on_hold, disputed) VALUES (1, 'a@example.com', 'x', 0, '2026-01-01', 0, 0, 0, 0)"
            )
        )
        request_settlement(session, 1)
        assert session.info.pop("paydesk_pending_settlements") == {1}
        request_settlement(session, 1)
        assert "paydesk_pending_settlements" not in session.info
        session.execute(delete(SettlementRequest))
        request_settlement(session, 1)
        assert session.info.pop("paydesk_pending_settlements") == {1}
        session.rollback()
    engine.dispose()
