"""The generic email job: rendered in HTML and plain text, sent by a real rq worker through SMTP,
retried by RQ when the SMTP server is unreachable."""

import pytest
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from jobs.mail import EMAIL_RETRY, enqueue_email
from jobs.queue import get_queue
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def test_templated_email_is_sent_by_the_worker_in_html_and_plain_text(app, worker, mailbox):
    assert enqueue_email("someone@example.com", "Your balance runs out on 2027-02-12", "dunning_runway_warning",
                         customer={"name": "Ada"}, available="$4.00", runs_out_at=_dt("2027-02-12T04:00:00"),
                         deletion_at=_dt("2027-06-01T00:05:00"), cards_link="http://x/cards",
                         balance_link="http://x/balance")
    worker.run_burst()
    [message] = mailbox.wait_for(1)
    assert message["To"] == "someone@example.com"
    assert message["Subject"] == "Your balance runs out on 2027-02-12"
    assert "runs out on 2027-02-12" in message.get_body(("plain",)).get_content()
    assert "<strong>2027-02-12</strong>" in message.get_body(("html",)).get_content()


def test_email_job_raises_on_smtp_failure_so_rq_schedules_a_retry(app, worker, mailbox):
    worker.env["SMTP_PORT"] = str(free_port())  # nothing listens there
    enqueue_email("someone@example.com", "Hello", "dunning_runway_warning", customer={"name": None},
                  available="$0.00", runs_out_at=_dt("2027-02-12T04:00:00"),
                  deletion_at=_dt("2027-06-01T00:05:00"), cards_link="c", balance_link="b")
    worker.run_burst()
    queue = get_queue()
    [job_id] = ScheduledJobRegistry(queue=queue).get_job_ids()
    job = queue.fetch_job(job_id)
    assert job.retries_left == EMAIL_RETRY.max - 1
    assert FailedJobRegistry(queue=queue).count == 0  # not given up: retried later
    assert mailbox.messages == []


def _dt(text):
    from datetime import UTC, datetime

    return datetime.fromisoformat(text).replace(tzinfo=UTC)
