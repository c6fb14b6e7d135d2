"""How job functions get an app context and a database session.

Inside the web process (inline mode, tests) the current app is reused; in an `rq worker`
process an app is created once from the environment.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, current_app, has_app_context
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, configure_mappers

log = logging.getLogger(__name__)

_worker_app: Flask | None = None


def worker_app() -> Flask:
    global _worker_app
    if _worker_app is None:
        from app import create_app

        _worker_app = create_app()
    return _worker_app


def warm_up() -> None:
    """Build the worker app and import every job module now (in the worker's parent process), then
    do what the first job would otherwise pay for: configure the ORM mappers (~50 ms, and every
    forked work-horse inherits them configured) and open one database connection (the pool keeps it
    for the jobs run in this process; the dialect learns the server once, for the horses too)."""
    import jobs.dunning  # noqa: F401
    import jobs.foresight  # noqa: F401
    import jobs.invoicing  # noqa: F401
    import jobs.mail  # noqa: F401
    import jobs.notifications  # noqa: F401
    import jobs.refunds  # noqa: F401
    import jobs.settlement  # noqa: F401
    import jobs.stripe_events  # noqa: F401
    import jobs.topups  # noqa: F401

    app = worker_app()
    configure_mappers()
    try:
        with app.extensions["paydesk_engine"].connect():
            pass
    except OperationalError:  # the database is not up yet: the first job connects
        log.warning("worker warm-up: no database connection yet", exc_info=True)


def after_fork() -> None:
    """In a forked work-horse: never reuse the parent's pooled connections."""
    if _worker_app is not None:
        _worker_app.extensions["paydesk_engine"].dispose(close=False)


@contextmanager
def job_session() -> Iterator[Session]:
    """A fresh Session for one job, inside an app context; always closed."""
    from app.extensions import db

    if has_app_context():
        session = db.new_session()
        try:
            yield session
        finally:
            session.close()
        return
    with worker_app().app_context():
        session = db.new_session()
        try:
            yield session
        finally:
            session.close()


def app_config(key: str):
    if has_app_context():
        return current_app.config[key]
    return worker_app().config[key]
