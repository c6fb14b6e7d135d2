"""Sending email: SMTP in production and tests, the log in the embedded default.

Messages are rendered from templates/email/<name>.txt and .html; attachments are
(filename, mimetype, bytes) tuples.
"""

import logging
import smtplib
from email.message import EmailMessage
from email.utils import make_msgid

from flask import current_app, render_template, url_for
from werkzeug.routing import BuildError

log = logging.getLogger(__name__)


def build_message(to: str, subject: str, template: str, attachments=(), message_id: str | None = None,
                  **context) -> EmailMessage:
    """`message_id` makes a retried send recognisable as the same email (mail clients collapse it)."""
    msg = EmailMessage()
    msg["From"] = current_app.config["MAIL_FROM"]
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or make_msgid(domain="paydesk.local")
    msg.set_content(render_template(f"email/{template}.txt", **context))
    msg.add_alternative(render_template(f"email/{template}.html", **context), subtype="html")
    for filename, mimetype, data in attachments:
        maintype, subtype = mimetype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def send_message(msg: EmailMessage) -> None:
    """Deliver now; raises on SMTP failure so the calling job can be retried."""
    cfg = current_app.config
    if cfg["MAIL_BACKEND"] == "console":
        log.info("email to %s: %s\n%s", msg["To"], msg["Subject"], msg.get_body(("plain",)).get_content())
        return
    with smtplib.SMTP(cfg["SMTP_HOST"], cfg["SMTP_PORT"], timeout=10) as smtp:
        if cfg["SMTP_STARTTLS"]:
            smtp.starttls()
        if cfg["SMTP_USERNAME"]:
            smtp.login(cfg["SMTP_USERNAME"], cfg["SMTP_PASSWORD"] or "")
        smtp.send_message(msg)


def external_url(endpoint: str, **values) -> str:
    """An absolute link for an email, built on BASE_URL (jobs have no request to take it from)."""
    with current_app.test_request_context(base_url=current_app.config["BASE_URL"]):
        return url_for(endpoint, _external=True, **values)


def first_external_url(endpoints: tuple[str, ...], fallback_path: str, **values) -> str:
    """The first endpoint that exists (pages owned by other features may not be there yet)."""
    for endpoint in endpoints:
        try:
            return external_url(endpoint, **values)
        except BuildError:
            continue
    return current_app.config["BASE_URL"] + fallback_path
