"""Cards pages (Stripe issue)."""

from app.web.customer import bp  # noqa: F401
