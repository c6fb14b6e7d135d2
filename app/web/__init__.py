"""Blueprints by audience, error pages, the input doors every request passes, template helpers."""

import logging
import re

from flask import Flask, abort, current_app, render_template, request, session, url_for
from flask_login import current_user
from markupsafe import Markup, escape

from app import accounts
from app.billing.card_labels import card_label
from app.billing.money import format_money_for, format_unit_price
from app.billing.vouchers import valid_until_text
from app.extensions import db, login_manager
from app.models import User
from app.web.helpers import MAX_ID, IdConverter, describe_device, is_htmx

log = logging.getLogger(__name__)

# C0 control characters other than tab, CR and LF, and DEL: never typed by a person.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Request bodies that are not form fields: validated by their signature (Stripe).
RAW_BODY_ENDPOINTS = ("stripe.webhook",)
# The site navigation: (endpoint, label); an endpoint whose blueprint is not registered is left out.
CUSTOMER_NAV = (("customer.dashboard", "Dashboard"), ("customer.invoices", "Invoices"), ("customer.cards", "Cards"),
                ("customer.balance", "Balance"), ("customer.deployments", "Deployments"), ("customer.activity", "Activity"),
                ("customer.profile", "Profile"))
ADMIN_NAV = (("admin.index", "Admin"), ("admin.invoices", "Invoices"), ("admin.customers", "Customers"),
             ("admin.refunds", "Refunds"), ("admin.vouchers", "Vouchers"), ("admin.pricing", "Pricing"))
STATIC_LINKS = (("pico_css", "vendor/pico-2.1.1.min.css"), ("paydesk_css", "paydesk.css"), ("htmx_js", "vendor/htmx-2.0.8.min.js"))
PAGE_LINKS = (("index", "auth.index"), ("account", "auth.account"), ("logout", "auth.logout"), ("login", "auth.login"),
              ("signup", "auth.signup"))


@login_manager.user_loader
def _load_user(user_id: str) -> User | None:
    """The user of a live server-side session (app.accounts): a cookie whose session was ended
    (logout, password change or reset, "sign out everywhere", idle or age limit) is anonymous."""
    from app.web.auth import SESSION_KEY, session_limits

    token = session.get(SESSION_KEY)
    user = None
    if token and user_id.isdigit():
        user = accounts.session_user(db.session, int(user_id), token, **session_limits())
    if user is None:
        session.clear()
    return user


def _resolve_user_first() -> None:
    """Load the user (and move the session's last_seen) before the view runs, so that write never
    lands in the middle of a view's own transaction. Not for static files, nor for the Stripe
    webhook (no user, no session: it is authenticated by its signature alone)."""
    if request.endpoint != "static" and request.endpoint not in RAW_BODY_ENDPOINTS:
        current_user._get_current_object()


def _nav_items(entries) -> Markup:
    return Markup("\n").join(
        Markup('<li><a href="{}" id="nav-{}">{}</a></li>').format(url_for(endpoint), endpoint.replace(".", "-"), label)
        for endpoint, label in entries if endpoint in current_app.view_functions
    )


def site_links() -> dict:
    """The links every page's frame shows (stylesheets, script, navigation), built with url_for once
    per app and script root: they depend on nothing else, and base.html needs them on every page."""
    cache = current_app.extensions.setdefault("paydesk_site_links", {})
    links = cache.get(request.script_root)
    if links is None:
        links = {name: url_for("static", filename=filename) for name, filename in STATIC_LINKS}
        links.update({name: url_for(endpoint) for name, endpoint in PAGE_LINKS})
        links["customer_nav"] = _nav_items(CUSTOMER_NAV)
        links["admin_nav"] = _nav_items(ADMIN_NAV)
        cache[request.script_root] = links
    return links


def id_url(endpoint: str, **one_id) -> str:
    """url_for(endpoint, <name>=<id>) for an endpoint whose only argument is an id (IdConverter):
    the URL around the id is built once per app and script root, the id put in per call."""
    ((name, value),) = one_id.items()
    cache = current_app.extensions.setdefault("paydesk_id_urls", {})
    key = (endpoint, name, request.script_root)
    parts = cache.get(key)
    if parts is None:
        marker = str(MAX_ID)
        built = url_for(endpoint, **{name: MAX_ID})
        if built.count(marker) != 1:
            return url_for(endpoint, **one_id)
        parts = cache[key] = tuple(built.split(marker))
    return f"{parts[0]}{int(value)}{parts[1]}"  # as IdConverter.to_url


def register_web(app: Flask) -> None:
    from app.web.admin import bp as admin_bp
    from app.web.api import bp as api_bp
    from app.web.auth import bp as auth_bp
    from app.web.customer import bp as customer_bp
    from app.web.health import bp as health_bp
    from app.web.security_headers import register_security_headers
    from app.web.stripe import bp as stripe_bp

    app.url_map.converters["id"] = IdConverter
    register_security_headers(app)
    app.before_request(_refuse_control_characters)
    app.before_request(_resolve_user_first)
    app.register_blueprint(auth_bp)
    app.register_blueprint(customer_bp)
    app.register_blueprint(admin_bp, url_prefix="/admin")
    app.register_blueprint(api_bp, url_prefix="/api/v1")
    app.register_blueprint(stripe_bp, url_prefix="/stripe")
    app.register_blueprint(health_bp)

    config = app.config
    app.jinja_env.filters["money"] = lambda cents: format_money_for(config, cents)
    app.jinja_env.filters["unit_price"] = lambda price: format_unit_price(price)
    app.jinja_env.filters["valid_until"] = valid_until_text
    app.jinja_env.globals["is_htmx"] = is_htmx
    app.jinja_env.globals["card_label"] = card_label
    app.jinja_env.filters["device"] = describe_device
    app.jinja_env.globals["has_endpoint"] = lambda endpoint: endpoint in app.view_functions
    app.jinja_env.globals["site_links"] = site_links
    app.jinja_env.globals["id_url"] = id_url

    for code in (*ERROR_PAGES, 401, 405, 409, 413, 415, 422):
        app.register_error_handler(code, _error_page(code))


ERROR_PAGES = (400, 403, 404, 429, 500)  # statuses with an HTML page; the others answer werkzeug's own


def _refuse_control_characters():
    """NUL and other control characters in a query argument, a path or a form field: 400, before
    any view runs (PostgreSQL refuses NUL in text; nothing else wants them)."""
    if request.endpoint in RAW_BODY_ENDPOINTS or request.blueprint == "api":
        return  # the API validates its own arguments and answers in JSON
    texts = [request.path, *request.args.keys(), *request.args.values(), *request.form.keys(), *request.form.values()]
    if any(CONTROL_CHARACTERS.search(text) for text in texts):
        abort(400, description="Text may not contain control characters (such as NUL).")


def _error_page(code: int):
    """Roll the request's session back first (a failed flush must not break the page), and never
    raise: if the page cannot render, answer a minimal page with the same status."""

    def handler(error):
        from app.web.api import api_error_response, is_api_request

        if is_api_request():  # JSON under /api/v1, whatever the status (routing errors, 413, 500 too)
            return api_error_response(error, code)
        if code not in ERROR_PAGES:
            return error
        try:
            db.session.rollback()
        except Exception:  # noqa: BLE001 - the error page must render whatever state the session is in
            log.exception("rollback before the error page failed")
        description = getattr(error, "description", None)
        try:
            return render_template("errors/error.html", code=code, description=description), code
        except Exception:  # noqa: BLE001
            log.exception("the error page for %s could not render", code)
            return f"<!doctype html><title>{code}</title><h1>Error {code}</h1><p>{escape(description or '')}</p>", code

    return handler
