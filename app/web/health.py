"""/healthz: is the database reachable, is Redis reachable."""

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from app.extensions import db

bp = Blueprint("health", __name__)


@bp.route("/healthz")
def healthz():
    checks = {}
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        checks["database"] = f"error: {type(exc).__name__}"
    if current_app.config["REDIS_URL"]:
        try:
            from jobs.queue import redis_connection

            redis_connection().ping()
            checks["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["redis"] = f"error: {type(exc).__name__}"
    else:
        checks["redis"] = "not configured (jobs run in-process)"
    healthy = all(v == "ok" or v.startswith("not configured") for v in checks.values())
    return jsonify(status="ok" if healthy else "degraded", checks=checks), 200 if healthy else 503
