"""Email jobs. RQ retries them when SMTP fails (see enqueue options at the call sites)."""

from flask import url_for
from rq import Retry

from app.mail import build_message, send_message
from app.models import User
from jobs.queue import enqueue
from jobs.runtime import job_session, worker_app


def _send_account_link(user_id: int, endpoint: str, token: str | None, subject: str, template: str,
                       **context) -> None:
    """A mail about the account, with a link built on BASE_URL (`token` goes into the link)."""
    with job_session() as session:
        user = session.get(User, user_id)
        if user is None:
            return
        from flask import current_app

        base = current_app.config["BASE_URL"]
        with current_app.test_request_context(base_url=base):
            link = url_for(endpoint, token=token, _external=True) if token else url_for(endpoint, _external=True)
            reset_link = url_for("auth.forgot_password", _external=True)
            msg = build_message(user.email, subject, template, link=link, reset_link=reset_link, user=user,
                                **context)
        send_message(msg)


def send_password_reset_email(user_id: int, token: str) -> None:
    _send_account_link(user_id, "auth.reset_password", token, "Reset your Paydesk password", "password_reset")


def send_verification_email(user_id: int, token: str) -> None:
    _send_account_link(user_id, "auth.verify_email", token, "Confirm your email for Paydesk", "verify_email")


# Failed sends are retried by RQ with these delays (seconds); the job raises on SMTP failure.
EMAIL_RETRY = Retry(max=5, interval=[10, 60, 300, 900, 3600])


def send_templated_email(to: str, subject: str, template: str, context: dict | None = None) -> None:
    """Render templates/email/<template>.txt/.html with `context` (plain values) and send it.
    Raises on SMTP failure so RQ retries it."""
    from flask import current_app, has_app_context

    if not has_app_context():
        with worker_app().app_context():
            return send_templated_email(to, subject, template, context)
    msg = build_message(to, subject, template, base_url=current_app.config["BASE_URL"], **(context or {}))
    send_message(msg)


def enqueue_email(to: str, subject: str, template: str, **context) -> bool:
    """Send an email in the background, retried with backoff when SMTP fails."""
    return enqueue(send_templated_email, to, subject, template, context, retry=EMAIL_RETRY)
