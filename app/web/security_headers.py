"""Response headers every route gets (ASVS V3.4, V14.4): a strict CSP, framing refused, nosniff,
Referrer-Policy, HSTS over HTTPS (flask-talisman), and `Cache-Control: no-store` on everything
that is not a static file — pages with money and personal data, PDFs, CSVs and API answers.

The CSP allows no inline script or style: templates carry no `<script>` bodies, `style="…"`
or `hx-on*` attributes, and HTMX is told (meta `htmx-config`) not to inject its indicator
styles, evaluate code or run script tags from swapped content. Forms may post to ourselves and
to the Stripe Checkout origin only (Chromium applies `form-action` to the 303 that follows a
form post, and starting Checkout is exactly that).
"""

from urllib.parse import urlsplit

from flask import Flask, request

from app.extensions import talisman

STRIPE_CHECKOUT_ORIGIN = "https://checkout.stripe.com"
HSTS_MAX_AGE_SECONDS = 365 * 24 * 3600


def content_security_policy(config) -> dict[str, str]:
    form_targets = ["'self'", STRIPE_CHECKOUT_ORIGIN]
    api_base = config.get("STRIPE_API_BASE")
    if api_base:
        parts = urlsplit(api_base)
        form_targets.append(f"{parts.scheme}://{parts.netloc}")
    return {
        "default-src": "'self'",
        "script-src": "'self'",
        "style-src": "'self'",
        # Pico draws its form icons as `data:` SVG backgrounds.
        "img-src": "'self' data:",
        "font-src": "'self'",
        "connect-src": "'self'",
        "object-src": "'none'",
        "base-uri": "'none'",
        "form-action": " ".join(form_targets),
        "frame-ancestors": "'none'",
    }


def register_security_headers(app: Flask) -> None:
    talisman.init_app(
        app,
        # TLS ends at the proxy in front of gunicorn; HSTS is sent whenever the request came in
        # over HTTPS (directly or as told by X-Forwarded-Proto), and never forces a redirect here.
        force_https=False,
        strict_transport_security=True,
        strict_transport_security_max_age=HSTS_MAX_AGE_SECONDS,
        strict_transport_security_include_subdomains=True,
        # Cookie flags stay in app.config (SESSION_COOKIE_SECURE follows BASE_URL).
        session_cookie_secure=False,
        session_cookie_http_only=True,
        session_cookie_samesite=app.config.get("SESSION_COOKIE_SAMESITE", "Lax"),
        frame_options="DENY",
        content_security_policy=content_security_policy(app.config),
        referrer_policy="same-origin",
        x_xss_protection=False,
        permissions_policy={"camera": "()", "microphone": "()", "geolocation": "()", "payment": "()"},
    )
    app.after_request(_no_store_unless_static)


def _no_store_unless_static(response):
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
        response.headers.setdefault("Pragma", "no-cache")
    return response
