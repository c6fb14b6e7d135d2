"""Admin customer pages (money-core / dunning issues)."""

from app.web.admin import bp  # noqa: F401
