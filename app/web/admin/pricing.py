"""Admin pricing pages (usage issue)."""

from app.web.admin import bp  # noqa: F401
