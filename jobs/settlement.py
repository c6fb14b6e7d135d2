"""Settlement jobs: thin wrappers around app.billing.settlement."""

from app.billing.settlement import settle_customer
from jobs.runtime import job_session


def settle_customer_job(customer_id: int) -> None:
    with job_session() as session:
        settle_customer(session, customer_id)
