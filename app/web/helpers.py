"""Small view helpers shared by every blueprint."""

from functools import lru_cache, wraps

from flask import abort, get_flashed_messages, render_template, request
from flask_login import current_user, login_required
from jinja2_fragments.flask import render_block
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.routing import BaseConverter, ValidationError

# Every id in a URL is an INTEGER primary key (PostgreSQL int4): larger numbers cannot exist.
MAX_ID = 2**31 - 1


class IdConverter(BaseConverter):
    """`<id:invoice_id>`: a database id, 1..MAX_ID. Anything else (zero, leading zeros, 20 digits,
    a sign) does not match the route or fails validation, so it is a 404 before the view runs."""

    regex = r"[1-9][0-9]{0,9}"
    part_isolating = True

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > MAX_ID:
            raise ValidationError()
        return number

    def to_url(self, value) -> str:
        return str(int(value))


def id_from_text(text) -> int | None:
    """A typed id (a search box, a filter) → int within 1..MAX_ID, or None."""
    text = (text or "").strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        return None
    number = int(text)
    return number if 1 <= number <= MAX_ID else None


def page_number(pages: int) -> int:
    """`?page=` clamped to 1..pages (garbage, negatives and huge numbers included)."""
    raw = request.args.get("page", "")
    number = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else 1
    return min(max(number, 1), max(pages, 1))


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
    object_id = object_id if isinstance(object_id, int) else id_from_text(str(object_id))
    if object_id is None or not 1 <= object_id <= MAX_ID:
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
