"""Processed Stripe events, top-ups and disputes (Stripe issue)."""
