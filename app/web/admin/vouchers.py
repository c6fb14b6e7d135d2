"""Admin voucher pages (vouchers issue)."""

from app.web.admin import bp  # noqa: F401
