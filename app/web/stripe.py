"""Stripe endpoints: Checkout return URLs and the signed webhook."""

from flask import Blueprint

bp = Blueprint("stripe", __name__)
