"""Email jobs. RQ retries them when SMTP fails (see enqueue options at the call sites)."""

from flask import url_for

from app.mail import build_message, send_message
from app.models import User
from jobs.runtime import job_session


def send_password_reset_email(user_id: int, token: str) -> None:
    with job_session() as session:
        user = session.get(User, user_id)
        if user is None:
            return
        from flask import current_app

        base = current_app.config["BASE_URL"]
        with current_app.test_request_context(base_url=base):
            link = url_for("auth.reset_password", token=token, _external=True)
            msg = build_message(user.email, "Reset your Paydesk password", "password_reset", link=link, user=user)
        send_message(msg)
