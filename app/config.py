"""Settings from the environment, in one place.

`load_config()` is called by `create_app()`; nothing reads the environment at import time.
Defaults describe the embedded development setup (SQLite, in-process jobs, local Stripe emulator).
"""

import os
import secrets
from dataclasses import dataclass


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _bool(name: str, default: bool) -> bool:
    value = _env(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _int(name: str, default: int) -> int:
    value = _env(name)
    return int(value) if value is not None else default


@dataclass(frozen=True)
class Setting:
    env: str
    default: str
    description: str


# Documented in the README's configuration table (kept in sync by tests/unit/test_config.py).
SETTINGS = [
    Setting("SECRET_KEY", "(required)", "Flask session/CSRF signing key. The app refuses to start without it unless debugging or testing; `bin/dev` keeps a random one in `instance/secret_key`."),
    Setting("DATABASE_URL", "sqlite:///instance/paydesk.sqlite3", "SQLAlchemy URL; PostgreSQL in production."),
    Setting("REDIS_URL", "(unset)", "Redis for RQ jobs and rate limits. Unset = jobs run in-process."),
    Setting("JOBS_MODE", "rq if REDIS_URL else inline", "`rq` enqueues to Redis; `inline` runs jobs in a background thread."),
    Setting("BASE_URL", "http://127.0.0.1:5000", "Public URL of the portal, for links in emails and Stripe redirects built by jobs."),
    Setting("CURRENCY", "usd", "ISO currency of this installation (amounts are integers in its minor unit)."),
    Setting("LOCALE", "en_US", "Babel locale for formatting amounts and dates."),
    Setting("STRIPE_API_KEY", "sk_test_paydesk", "Stripe secret key."),
    Setting("STRIPE_API_BASE", "(Stripe)", "Stripe API base URL; the local emulator in development and tests."),
    Setting("STRIPE_TIMEOUT_SECONDS", "20", "Timeout of one Stripe API call; a timed-out charge is `unknown`, retried with its key."),
    Setting("STRIPE_WEBHOOK_SECRET", "whsec_paydesk_dev", "Secret that signs Stripe webhooks."),
    Setting("TOPUP_MIN_CENTS", "500", "Smallest balance top-up, in minor units."),
    Setting("TOPUP_MAX_CENTS", "500000", "Largest balance top-up, in minor units."),
    Setting("ADJUSTMENT_MAX_CENTS", "10000000", "Largest admin cash balance adjustment (credit or debit), in minor units."),
    Setting("VOUCHER_VALUE_MAX_CENTS", "100000", "Largest value of one voucher, in minor units."),
    Setting("VOUCHER_BATCH_MAX_CENTS", "10000000", "Largest total of a voucher batch (value × codes × redemptions), in minor units."),
    Setting("HOURLY_PRICE_MAX", "1000", "Largest hourly price of a plan, in major units (up to 6 decimal places)."),
    Setting("VAT_RATE", "0", "Default VAT rate as a decimal fraction, e.g. 0.19."),
    Setting("VAT_COUNTRY_RATES", "(unset)", "Optional per-country VAT rules for the buyer's country, e.g. `DE=0.19,FR=0.20`; others use VAT_RATE."),
    Setting("GRACE_PERIOD_DAYS", "92", "Days an invoice may stay unpaid before deployments are marked for deletion."),
    Setting("DELETION_WARNING_DAYS", "14", "Days before deletion that the customer is warned."),
    Setting("FORESIGHT_REFRESH_SECONDS", "60", "How often the dashboard's usage, forecast and runway panel refreshes itself."),
    Setting("PLATFORM_API_TOKEN", "dev-platform-token", "Bearer token the provisioning platform uses for /api/v1."),
    Setting("PLATFORM_WEBHOOK_URL", "(unset)", "Optional URL told about deployments marked for deletion (`customer.deployments_marked_for_deletion`) and unmarked after payment (`deployments.unmarked`)."),
    Setting("PLATFORM_WEBHOOK_SECRET", "(unset)", "Secret that signs the outgoing platform webhook."),
    Setting("MAIL_BACKEND", "console", "`smtp` or `console` (prints emails to the log)."),
    Setting("SMTP_HOST", "127.0.0.1", "SMTP server host."),
    Setting("SMTP_PORT", "25", "SMTP server port."),
    Setting("SMTP_USERNAME", "(unset)", "SMTP login, if the server needs one."),
    Setting("SMTP_PASSWORD", "(unset)", "SMTP password."),
    Setting("SMTP_STARTTLS", "false", "Use STARTTLS."),
    Setting("MAIL_FROM", "Paydesk <billing@paydesk.local>", "Sender of every email."),
    Setting("SELLER_NAME", "Paydesk Cloud Ltd.", "Seller name printed on invoices."),
    Setting("SELLER_ADDRESS", "1 Server Street, Berlin", "Seller address printed on invoices (`;` or a new line separates lines)."),
    Setting("SELLER_COUNTRY", "(unset)", "Seller's ISO country code, e.g. `DE`; printed on invoices and needed for reverse charge."),
    Setting("SELLER_VAT_ID", "(unset)", "Seller's VAT ID printed on invoices, e.g. `DE136695976`."),
    Setting("REVERSE_CHARGE", "false", "Charge no VAT, with a reverse-charge note, to buyers with a VAT ID in an EU country other than SELLER_COUNTRY."),
    Setting("PAYMENT_TERMS_DAYS", "14", "Days after issue an invoice is due (its due date, fixed at issue)."),
    Setting("RATELIMIT_STORAGE_URI", "REDIS_URL or memory://", "Flask-Limiter storage."),
    Setting("SESSION_COOKIE_SECURE", "true unless BASE_URL is http", "Send the session cookie over HTTPS only."),
    Setting("SESSION_IDLE_MINUTES", "30", "A session unused this long ends (the next request must log in again)."),
    Setting("SESSION_MAX_HOURS", "12", "A session ends this long after its login, used or not."),
]


def load_config() -> dict:
    """Read the environment once and return a Flask config mapping."""
    database_url = _env("DATABASE_URL", "sqlite:///instance/paydesk.sqlite3")
    redis_url = _env("REDIS_URL")
    base_url = _env("BASE_URL", "http://127.0.0.1:5000").rstrip("/")
    return {
        "SECRET_KEY": _env("SECRET_KEY"),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "JOBS_MODE": _env("JOBS_MODE", "rq" if redis_url else "inline"),
        "BASE_URL": base_url,
        "CURRENCY": _env("CURRENCY", "usd").lower(),
        "LOCALE": _env("LOCALE", "en_US"),
        "STRIPE_API_KEY": _env("STRIPE_API_KEY", "sk_test_paydesk"),
        "STRIPE_API_BASE": _env("STRIPE_API_BASE"),
        "STRIPE_TIMEOUT_SECONDS": float(_env("STRIPE_TIMEOUT_SECONDS", "20")),
        "STRIPE_WEBHOOK_SECRET": _env("STRIPE_WEBHOOK_SECRET", "whsec_paydesk_dev"),
        "TOPUP_MIN_CENTS": _int("TOPUP_MIN_CENTS", 500),
        "TOPUP_MAX_CENTS": _int("TOPUP_MAX_CENTS", 500_000),
        "ADJUSTMENT_MAX_CENTS": _int("ADJUSTMENT_MAX_CENTS", 10_000_000),
        "VOUCHER_VALUE_MAX_CENTS": _int("VOUCHER_VALUE_MAX_CENTS", 100_000),
        "VOUCHER_BATCH_MAX_CENTS": _int("VOUCHER_BATCH_MAX_CENTS", 10_000_000),
        "HOURLY_PRICE_MAX": _env("HOURLY_PRICE_MAX", "1000"),
        "VAT_RATE": _env("VAT_RATE", "0"),
        "VAT_COUNTRY_RATES": _env("VAT_COUNTRY_RATES"),
        "GRACE_PERIOD_DAYS": _int("GRACE_PERIOD_DAYS", 92),
        "DELETION_WARNING_DAYS": _int("DELETION_WARNING_DAYS", 14),
        "FORESIGHT_REFRESH_SECONDS": _int("FORESIGHT_REFRESH_SECONDS", 60),
        "PLATFORM_API_TOKEN": _env("PLATFORM_API_TOKEN", "dev-platform-token"),
        "PLATFORM_WEBHOOK_URL": _env("PLATFORM_WEBHOOK_URL"),
        "PLATFORM_WEBHOOK_SECRET": _env("PLATFORM_WEBHOOK_SECRET"),
        "MAIL_BACKEND": _env("MAIL_BACKEND", "console"),
        "SMTP_HOST": _env("SMTP_HOST", "127.0.0.1"),
        "SMTP_PORT": _int("SMTP_PORT", 25),
        "SMTP_USERNAME": _env("SMTP_USERNAME"),
        "SMTP_PASSWORD": _env("SMTP_PASSWORD"),
        "SMTP_STARTTLS": _bool("SMTP_STARTTLS", False),
        "MAIL_FROM": _env("MAIL_FROM", "Paydesk <billing@paydesk.local>"),
        "SELLER_NAME": _env("SELLER_NAME", "Paydesk Cloud Ltd."),
        "SELLER_ADDRESS": _env("SELLER_ADDRESS", "1 Server Street, Berlin"),
        "SELLER_COUNTRY": (_env("SELLER_COUNTRY") or "").strip().upper() or None,
        "SELLER_VAT_ID": _env("SELLER_VAT_ID"),
        "REVERSE_CHARGE": _bool("REVERSE_CHARGE", False),
        "PAYMENT_TERMS_DAYS": _int("PAYMENT_TERMS_DAYS", 14),
        "RATELIMIT_STORAGE_URI": _env("RATELIMIT_STORAGE_URI", redis_url or "memory://"),
        "SESSION_COOKIE_SECURE": _bool("SESSION_COOKIE_SECURE", base_url.startswith("https://")),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_SECURE": _bool("SESSION_COOKIE_SECURE", base_url.startswith("https://")),
        "REMEMBER_COOKIE_HTTPONLY": True,
        "WTF_CSRF_TIME_LIMIT": None,
        "SESSION_IDLE_MINUTES": _int("SESSION_IDLE_MINUTES", 30),
        "SESSION_MAX_HOURS": _int("SESSION_MAX_HOURS", 12),
        # Flask-Limiter's 429s say when to come back (Retry-After).
        "RATELIMIT_HEADERS_ENABLED": True,
    }


class MissingSecretKey(RuntimeError):
    pass


def ensure_secret_key(config) -> None:
    """Production refuses to start without SECRET_KEY: a guessable or per-process key would let
    anyone forge sessions, or log everyone out on each restart. Debugging and tests may run with
    a random key for the process; `bin/dev` keeps a random one in instance/ across restarts."""
    if config.get("SECRET_KEY"):
        return
    if config.get("DEBUG") or config.get("TESTING"):
        config["SECRET_KEY"] = secrets.token_hex(32)
        return
    raise MissingSecretKey(
        "SECRET_KEY is not set. Set it to a long random value (e.g. `python -c 'import secrets; "
        "print(secrets.token_hex(32))'`); bin/dev does this for you in instance/secret_key."
    )
