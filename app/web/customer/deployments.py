"""Deployments pages (usage issue)."""

from app.web.customer import bp  # noqa: F401
