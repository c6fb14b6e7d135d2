"""Response headers every route gets (ASVS V3.4, V14.4): a strict CSP, framing refused, nosniff,
Referrer-Policy, HSTS over HTTPS (the values flask-talisman sent, computed once per app), and `Cache-Control: no-store` on everything
that is not a static file — pages with money and personal data, PDFs, CSVs and API answers.

The CSP allows no inline script or style: templates carry no `<script>` bodies, `style="…"`
or `hx-on*` attributes, and HTMX is told (meta `htmx-config`) not to inject its indicator
styles, evaluate code or run script tags from swapped content. Forms may post to ourselves and
to the Stripe Checkout origin only (Chromium applies `form-action` to the 303 that follows a
form post, and starting Checkout is exactly that).
"""

from urllib.parse import urlsplit

from flask import Flask, request

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


HSTS_VALUE = f"max-age={HSTS_MAX_AGE_SECONDS}; includeSubDomains"
PERMISSIONS_POLICY = {"camera": "()", "microphone": "()", "geolocation": "()", "payment": "()"}


def security_headers(config) -> dict[str, str]:
    """The headers every response gets (HSTS aside: HTTPS only), in flask-talisman's order and format."""
    csp = "; ".join(f"{directive} {sources}" for directive, sources in content_security_policy(config).items())
    return {
        "Permissions-Policy": ", ".join(f"{feature}={allow}" for feature, allow in PERMISSIONS_POLICY.items()),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": csp,
        "Referrer-Policy": "same-origin",
    }


def register_security_headers(app: Flask) -> None:
    """The header values are computed here, once per app: every response carries the same ones
    (flask-talisman's values, which it rebuilt for every response). The session cookie is
    HttpOnly with the configured SameSite (its Secure flag follows BASE_URL, in app.config)."""
    app.config["SESSION_COOKIE_SAMESITE"] = app.config.get("SESSION_COOKIE_SAMESITE", "Lax")
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    always = tuple(security_headers(app.config).items())
    hsts = ("Strict-Transport-Security", HSTS_VALUE)

    def set_security_headers(response):
        headers = response.headers
        for name, value in always:
            headers[name] = value
        # TLS ends at the proxy in front of gunicorn; HSTS is sent whenever the request came in
        # over HTTPS (directly or as told by X-Forwarded-Proto), and never forces a redirect here.
        if request.is_secure or request.headers.get("X-Forwarded-Proto", "http") == "https":
            headers[hsts[0]] = hsts[1]
        if request.endpoint != "static":
            headers["Cache-Control"] = "no-store"
            headers.setdefault("Pragma", "no-cache")
        return response

    app.after_request(set_security_headers)
