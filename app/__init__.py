"""Paydesk application factory: configuration, extensions, blueprints — nothing else."""

import logging

from flask import Flask

from app.config import ensure_secret_key, load_config
from app.extensions import csrf, db, limiter, login_manager


def create_app(overrides: dict | None = None) -> Flask:
    app = Flask(__name__, template_folder="../templates", static_folder="../static", instance_relative_config=True)
    app.config.update(load_config())
    if overrides:
        app.config.update(overrides)
    ensure_secret_key(app.config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)

    db.init_app(app)
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message_category = "info"
    limiter.init_app(app)

    from app.web import register_web

    register_web(app)

    from jobs.hooks import register_job_hooks

    register_job_hooks()

    from app.cli import register_cli

    register_cli(app)
    return app
