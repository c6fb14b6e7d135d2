"""JSON API for the provisioning platform (/api/v1)."""

from flask import Blueprint

from app.extensions import csrf

bp = Blueprint("api", __name__)
csrf.exempt(bp)
