"""Admin invoice pages (money-core issue)."""

from app.web.admin import bp  # noqa: F401
