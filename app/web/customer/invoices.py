"""Invoice pages (money-core issue)."""

from app.web.customer import bp  # noqa: F401
