"""Extension objects, created unbound and initialised in create_app()."""

import time

from flask import current_app, g
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_talisman import Talisman
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

login_manager = LoginManager()
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address, default_limits=[])
talisman = Talisman()
# A pooled connection idle longer than this is pinged before it is handed out (see make_engine).
PING_AFTER_IDLE_SECONDS = 10.0


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    engine = create_engine(url, pool_size=10, max_overflow=20)
    _ping_connections_after_idle(engine)
    return engine


def _ping_connections_after_idle(engine: Engine) -> None:
    """Like `pool_pre_ping`, but only for a connection that sat idle in the pool for more than
    PING_AFTER_IDLE_SECONDS: one used a moment ago is alive, and a ping on every checkout is one
    more round trip on every request. A dead one (database restarted, idle connection dropped by
    a proxy) is discarded and the pool hands out a fresh connection instead, as pre-ping does."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn, record):
        record.info["paydesk_checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn, record, _proxy):
        checked_in_at = record.info.pop("paydesk_checked_in_at", None)
        if checked_in_at is None or time.monotonic() - checked_in_at <= PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # noqa: BLE001 - any failure means the connection is unusable
            raise DisconnectionError("pooled connection failed its ping") from exc


class Database:
    """One engine and session factory per app; one Session per request (or job) on `g`."""

    def init_app(self, app) -> None:
        engine = make_engine(app.config["DATABASE_URL"])
        app.extensions["paydesk_engine"] = engine
        app.extensions["paydesk_sessionmaker"] = sessionmaker(engine, expire_on_commit=False)
        # Close at the end of each request and of each app context: tests and jobs may push one
        # app context around many requests, and a Session must never outlive its request.
        app.teardown_request(self._close_session)
        app.teardown_appcontext(self._close_session)

    @property
    def engine(self) -> Engine:
        return current_app.extensions["paydesk_engine"]

    def new_session(self) -> Session:
        return current_app.extensions["paydesk_sessionmaker"]()

    @property
    def session(self) -> Session:
        if "db_session" not in g:
            g.db_session = self.new_session()
        return g.db_session

    @staticmethod
    def _close_session(_exc=None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()


db = Database()
