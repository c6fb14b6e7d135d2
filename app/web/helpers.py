"""Small view helpers shared by every blueprint."""

from functools import lru_cache, wraps

from flask import abort, get_flashed_messages, render_template, request
from flask_login import current_user, login_required
from jinja2_fragments.flask import render_block
from sqlalchemy import select
from sqlalchemy.orm import Session


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def render_page_or_block(template: str, block: str, **context) -> str:
    """Full page for a normal request; for an HTMX request, just `block` plus the flash region
    as an out-of-band swap, so one template serves both."""
    if not is_htmx():
        return render_template(template, **context)
    return render_block(template, block, **context) + render_flashes_oob()


def render_flashes_oob() -> str:
    return render_template("_partials/_flashes.html", oob=True, messages=get_flashed_messages(with_categories=True))


def owned_or_404(session: Session, model, object_id, customer_id: int):
    """Load a customer-scoped row, or 404 when it does not exist or belongs to someone else."""
    try:
        object_id = int(object_id)
    except (TypeError, ValueError):
        abort(404)
    obj = session.scalar(select(model).where(model.id == object_id, model.customer_id == customer_id))
    if obj is None:
        abort(404)
    return obj


def admin_required(view):
    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapped


def customer_required(view):
    """Customer pages: login required; admins have their own pages."""

    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        return view(*args, **kwargs)

    return wrapped


@lru_cache(maxsize=512)
def describe_device(user_agent: str | None) -> str:
    """"Firefox on Linux" for the account page's session list (ua-parser)."""
    from ua_parser import parse

    if not user_agent:
        return "Unknown device"
    result = parse(user_agent[:300])
    browser = result.user_agent.family if result.user_agent else None
    system = result.os.family if result.os else None
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or user_agent[:60]


def parse_money_field(field, **bounds) -> int | None:
    """Parse a money form field through the money-input door, adding its message to the field's errors
    instead of raising: a view calls it whether or not the other fields validated, so that every
    field's errors show at once. An empty field is None (DataRequired, where used, says so)."""
    from app.billing.money import InvalidAmount
    from app.billing.money_input import parse_money_cents

    if not (field.data or "").strip():
        return None
    try:
        return parse_money_cents(field.data, **bounds)
    except InvalidAmount as exc:
        field.errors = [*field.errors, str(exc)]
        return None
