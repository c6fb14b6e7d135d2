"""Vouchers and redemptions (vouchers issue)."""
