"""Voucher redemption (vouchers issue)."""

from app.web.customer import bp  # noqa: F401
