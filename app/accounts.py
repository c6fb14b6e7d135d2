"""Accounts: sign-up with email verification, authentication, revocable sessions, password reset
and change. Services take a Session and plain values and commit what they did.

Guarantees (OWASP ASVS L2, see docs/asvs-l2.md):
- Passwords: 12–128 characters, strong enough for zxcvbn (score ≥ 3, judged offline against its
  bundled lists of common passwords, words and names, and against the account's own email and
  name); argon2id hashes, re-hashed at login when the hasher's parameters change.
- Tokens (reset, email verification): 256 random bits, only their SHA-256 stored, single use
  (claimed by a conditional UPDATE), reset tokens live one hour. Issuing a reset token voids the
  earlier ones; using one, or changing the password, voids all of them.
- Sessions are rows in `user_sessions`; the cookie carries a random id checked on every request.
  Logout ends every session of the account, a password change every other one (and rotates the
  current one), a reset or an admin's "sign out everywhere" all of them. Idle and absolute limits
  end a session too.
- Sign-up never says whether the email had an account: the caller answers "check your inbox"
  either way. Mails that carry a token (verification, reset) are sent by a job given the token
  (never stored in clear); the security notices (password changed, someone tried to sign up with
  your email) go through the notifications outbox in the same transaction, and always go out.
"""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Integer, String, bindparam, func, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, make_transient_to_detached
from zxcvbn import zxcvbn

from app.billing.notifications import queue_notification
from app.models import EmailVerificationToken, PasswordResetToken, User, UserSession
from app.models.base import UTCDateTime, utcnow

RESET_TOKEN_TTL = timedelta(hours=1)
VERIFICATION_TOKEN_TTL = timedelta(hours=48)
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 128
MIN_PASSWORD_SCORE = 3  # zxcvbn: "safely unguessable" against an offline slow-hash attack
SESSION_TOUCH_INTERVAL = timedelta(minutes=1)
_hasher = PasswordHasher()
# Verifying against this when the email is unknown keeps login timing uniform.
_DUMMY_HASH = _hasher.hash("paydesk-timing-equaliser")


class EmailTaken(Exception):
    pass


class InvalidResetToken(Exception):
    pass


class InvalidVerificationToken(Exception):
    pass


class WrongPassword(Exception):
    pass


class WeakPassword(ValueError):
    """`str(error)` tells the person what to do, fit to show next to the password field."""


class EmailNotVerified(Exception):
    """The password was right but the owner has not opened the verification link yet."""

    def __init__(self, user: User):
        super().__init__(user.email)
        self.user = user


def normalize_email(email: str) -> str:
    return email.strip().lower()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --------------------------------------------------------------- passwords ---
def password_problem(password: str, *, email: str = "", name: str | None = None) -> str | None:
    """Why this password is refused, in words a person can act on; None when it is fine."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"Use at least {MIN_PASSWORD_LENGTH} characters."
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"Use at most {MAX_PASSWORD_LENGTH} characters."
    local_part = email.split("@", 1)[0]
    inputs = [value for value in (email, local_part, name or "", "paydesk") if value]
    # zxcvbn's cost grows with length; the first 100 characters decide strength well enough.
    result = zxcvbn(password[:100], user_inputs=inputs)
    if result["score"] >= MIN_PASSWORD_SCORE:
        return None
    feedback = result["feedback"]
    parts = ["This password is too easy to guess."]
    if feedback.get("warning"):
        parts.append(feedback["warning"].rstrip(".") + ".")
    parts.extend(feedback.get("suggestions") or ["Add a few uncommon words."])
    return " ".join(parts)


def check_password(password: str, *, email: str = "", name: str | None = None) -> None:
    problem = password_problem(password, email=email, name=name)
    if problem is not None:
        raise WeakPassword(problem)


# ---------------------------------------------------------------- accounts ---
def create_user(session: Session, email: str, password: str, *, is_admin: bool = False, name: str | None = None) -> User:
    """An account created by someone trusted (the CLI, the demo data, tests): verified at once.
    Raises EmailTaken or WeakPassword without writing anything."""
    email = normalize_email(email)
    check_password(password, email=email, name=name)
    if session.scalar(select(User.id).where(func.lower(User.email) == email)) is not None:
        raise EmailTaken(email)
    user = User(email=email, password_hash=hash_password(password), is_admin=is_admin, name=name,
                email_verified_at=utcnow())
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise EmailTaken(email) from None
    return user


@dataclass(frozen=True)
class SignUp:
    """What a sign-up did. `verification_token` is set when a verification link must be mailed;
    `existing` when the email belongs to an account whose owner was told (or is being signed up
    at this very moment by a concurrent request)."""

    user_id: int
    email: str
    verification_token: str | None
    existing: bool


def sign_up(session: Session, email: str, password: str, *, name: str | None = None) -> SignUp:
    """Self-service sign-up. The caller answers the same way whatever happened.

    - new email: an unverified account and a verification token;
    - an account that was never verified: its password and name are replaced by this sign-up's and
      earlier links die (whoever opens the newest link proves they own the mailbox and chose the
      password that will work — a squatter's earlier sign-up cannot hijack the account);
    - a verified account: nothing changes (`existing`), the owner gets a "someone tried" mail.
    Raises WeakPassword (judged the same way whether or not the email is known)."""
    email = normalize_email(email)
    check_password(password, email=email, name=name)
    password_hash = hash_password(password)  # also for a known email: the same work either way
    user = session.scalar(select(User).where(User.email == email).with_for_update())
    if user is not None and user.email_verified_at is not None:
        now = utcnow()
        queue_notification(session, user_id=user.id, kind="signup_attempt", key=f"signup-attempt:{user.id}:{now.isoformat()}",
                           subject="Someone tried to sign up with your email", template="signup_attempt", context={})
        session.commit()
        return SignUp(user.id, email, None, existing=True)
    if user is None:
        user = User(email=email, password_hash=password_hash, name=name)
        session.add(user)
        try:
            session.flush()
        except IntegrityError:
            session.rollback()
            existing = session.scalar(select(User).where(User.email == email))
            return SignUp(existing.id, email, None, existing=True)
    else:
        user.password_hash = password_hash
        user.name = name
    token = _issue_verification_token(session, user.id)
    session.commit()
    return SignUp(user.id, email, token, existing=False)


def _issue_verification_token(session: Session, user_id: int) -> str:
    now = utcnow()
    session.execute(
        update(EmailVerificationToken)
        .where(EmailVerificationToken.user_id == user_id, EmailVerificationToken.used_at.is_(None))
        .values(used_at=now)
    )
    token = secrets.token_urlsafe(32)
    session.add(EmailVerificationToken(user_id=user_id, token_hash=_token_hash(token),
                                       expires_at=now + VERIFICATION_TOKEN_TTL))
    return token


def resend_verification(session: Session, user_id: int) -> str | None:
    """A fresh verification token for an unverified account (earlier ones die), None if verified."""
    user = session.get(User, user_id)
    if user is None or user.email_verified_at is not None:
        return None
    token = _issue_verification_token(session, user_id)
    session.commit()
    return token


def verify_email(session: Session, token: str) -> User:
    """Use a verification token once; the account may log in afterwards."""
    now = utcnow()
    row = session.scalar(select(EmailVerificationToken).where(EmailVerificationToken.token_hash == _token_hash(token)))
    if row is None or row.used_at is not None or row.expires_at <= now:
        raise InvalidVerificationToken()
    claimed = session.execute(
        update(EmailVerificationToken)
        .where(EmailVerificationToken.id == row.id, EmailVerificationToken.used_at.is_(None))
        .values(used_at=now)
    ).rowcount
    if claimed != 1:
        session.rollback()
        raise InvalidVerificationToken()
    user = session.get(User, row.user_id)
    if user.email_verified_at is None:
        user.email_verified_at = now
    session.commit()
    return user


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The account for these credentials, or None. Raises EmailNotVerified when the password is
    right but the email was never confirmed (only the password's owner learns that)."""
    user = session.scalar(select(User).where(User.email == normalize_email(email)))
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
        session.commit()
    if user.email_verified_at is None:
        raise EmailNotVerified(user)
    return user


# ---------------------------------------------------------------- sessions ---
def start_session(session: Session, user_id: int, *, user_agent: str | None, ip_address: str | None) -> str:
    """A new session for a login; returns the random id the cookie carries (only its hash is kept)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(UserSession(user_id=user_id, token_hash=_token_hash(token), created_at=now, last_seen_at=now,
                            user_agent=(user_agent or "")[:300] or None, ip_address=(ip_address or "")[:64] or None))
    session.commit()
    return token


def _live(now: datetime, idle_timeout: timedelta, max_age: timedelta):
    return (
        UserSession.ended_at.is_(None),
        UserSession.last_seen_at > now - idle_timeout,
        UserSession.created_at > now - max_age,
    )


@lru_cache(maxsize=1)
def _session_user_statement():
    """The live-session check every request makes, built once (bound: token hash, user id and the
    two limits as moments), as a Core statement: the user's columns (in `_user_keys()` order), then
    the session's id and last_seen_at. A request pays for running it, not for constructing it nor
    for the ORM's per-statement machinery."""
    users, sessions = User.__table__, UserSession.__table__
    return (
        select(*_user_columns(), sessions.c.id, sessions.c.last_seen_at)
        .join(sessions, sessions.c.user_id == users.c.id)
        .where(
            sessions.c.token_hash == bindparam("token_hash", type_=String), users.c.id == bindparam("user_id", type_=Integer),
            sessions.c.ended_at.is_(None),
            sessions.c.last_seen_at > bindparam("idle_after", type_=UTCDateTime),
            sessions.c.created_at > bindparam("born_after", type_=UTCDateTime),
        )
    )


def _user_columns():
    return [prop.columns[0] for prop in sa_inspect(User).column_attrs]


@lru_cache(maxsize=1)
def _user_keys() -> tuple[str, ...]:
    return tuple(prop.key for prop in sa_inspect(User).column_attrs)


def _persistent_user(session: Session, values: dict) -> User:
    """The User of these loaded column values, part of `session` as if the ORM had loaded it: the
    instance already in the session's identity map if there is one, else a new one whose values
    are its committed (unmodified) state, so later `session.get(User, id)` needs no query."""
    key = sa_inspect(User).identity_key_from_primary_key((values["id"],))
    existing = session.identity_map.get(key)
    if existing is not None:
        return existing
    user = User(**values)
    make_transient_to_detached(user)
    session.add(user)
    return user


def session_user(session: Session, user_id: int, token: str, *, idle_timeout: timedelta, max_age: timedelta,
                 touch: bool = True) -> User | None:
    """The user of a live session, or None (ended, idle too long, too old, someone else's).
    `last_seen_at` moves at most once a minute, so a busy session costs one UPDATE a minute.
    The rule is `_live`'s, with its moments bound."""
    now = utcnow()
    row = session.connection().execute(
        _session_user_statement(),
        {"token_hash": _token_hash(token), "user_id": user_id, "idle_after": now - idle_timeout, "born_after": now - max_age},
    ).first()
    if row is None:
        return None
    *user_values, session_id, last_seen_at = row
    if touch and now - last_seen_at >= SESSION_TOUCH_INTERVAL:
        session.execute(update(UserSession).where(UserSession.id == session_id).values(last_seen_at=now))
        session.commit()
    return _persistent_user(session, dict(zip(_user_keys(), user_values, strict=True)))


def active_sessions(session: Session, user_id: int, *, idle_timeout: timedelta, max_age: timedelta) -> list[UserSession]:
    now = utcnow()
    return list(session.scalars(
        select(UserSession)
        .where(UserSession.user_id == user_id, *_live(now, idle_timeout, max_age))
        .order_by(UserSession.last_seen_at.desc(), UserSession.id.desc())
    ))


def is_current_session(row: UserSession, token: str | None) -> bool:
    return token is not None and secrets.compare_digest(row.token_hash, _token_hash(token))


def _end(session: Session, *conditions, reason: str) -> int:
    return session.execute(
        update(UserSession).where(UserSession.ended_at.is_(None), *conditions).values(ended_at=utcnow(), end_reason=reason)
    ).rowcount


def end_all_sessions(session: Session, user_id: int, *, reason: str, except_token: str | None = None,
                     commit: bool = True) -> int:
    """End every session of the account (but `except_token`'s); returns how many ended.
    `commit=False` leaves the commit to the caller (e.g. together with its audit entry)."""
    conditions = [UserSession.user_id == user_id]
    if except_token is not None:
        conditions.append(UserSession.token_hash != _token_hash(except_token))
    ended = _end(session, *conditions, reason=reason)
    if commit:
        session.commit()
    return ended


def end_session_by_id(session: Session, user_id: int, session_id: int, *, reason: str) -> bool:
    """End one of the account's own sessions (the account page); False when not theirs or over."""
    ended = _end(session, UserSession.user_id == user_id, UserSession.id == session_id, reason=reason)
    session.commit()
    return ended == 1


def rotate_session(session: Session, user_id: int, old_token: str | None, *, user_agent: str | None,
                   ip_address: str | None) -> str:
    """Replace the current session id by a new one (after a change of credentials)."""
    if old_token:
        _end(session, UserSession.user_id == user_id, UserSession.token_hash == _token_hash(old_token), reason="rotated")
    return start_session(session, user_id, user_agent=user_agent, ip_address=ip_address)


# ------------------------------------------------------------------ tokens ---
def _announce_password_change(session: Session, user_id: int, how: str, now: datetime) -> None:
    queue_notification(session, user_id=user_id, kind="password_changed", key=f"password-changed:{user_id}:{now.isoformat()}",
                       subject="Your Paydesk password was changed", template="password_changed", context={"how": how})


def _void_reset_tokens(session: Session, user_id: int, now: datetime) -> None:
    session.execute(
        update(PasswordResetToken)
        .where(PasswordResetToken.user_id == user_id, PasswordResetToken.used_at.is_(None))
        .values(used_at=now)
    )


def create_reset_token(session: Session, email: str) -> tuple[User, str] | None:
    """A fresh one-time token for the account (every earlier token of it dies), or None when there
    is no such account (the caller must not reveal which)."""
    user = session.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None:
        return None
    now = utcnow()
    _void_reset_tokens(session, user.id, now)
    token = secrets.token_urlsafe(32)
    session.add(PasswordResetToken(user_id=user.id, token_hash=_token_hash(token), expires_at=now + RESET_TOKEN_TTL))
    session.commit()
    return user, token


def reset_password(session: Session, token: str, new_password: str) -> User:
    """Use a token once. The conditional UPDATE makes single use hold under concurrency; every
    other token and every session of the account die with it. Opening the mailed link proves the
    mailbox, so an unverified account becomes verified. Raises InvalidResetToken or WeakPassword
    (the token survives a refused password)."""
    now = utcnow()
    row = session.scalar(select(PasswordResetToken).where(PasswordResetToken.token_hash == _token_hash(token)))
    if row is None or row.used_at is not None or row.expires_at <= now:
        raise InvalidResetToken()
    user = session.get(User, row.user_id)
    check_password(new_password, email=user.email, name=user.name)
    claimed = session.execute(
        update(PasswordResetToken)
        .where(PasswordResetToken.id == row.id, PasswordResetToken.used_at.is_(None))
        .values(used_at=now)
    ).rowcount
    if claimed != 1:
        session.rollback()
        raise InvalidResetToken()
    _void_reset_tokens(session, user.id, now)
    user.password_hash = hash_password(new_password)
    if user.email_verified_at is None:
        user.email_verified_at = now
    _end(session, UserSession.user_id == user.id, reason="password_reset")
    _announce_password_change(session, user.id, "reset", now)
    session.commit()
    return user


def change_password(session: Session, user_id: int, current_password: str, new_password: str, *,
                    keep_token: str | None) -> User:
    """Change a password knowing the current one. Every reset token and every other session of
    the account die; the caller rotates the current session. Raises WrongPassword or WeakPassword."""
    user = session.get(User, user_id)
    try:
        _hasher.verify(user.password_hash, current_password)
    except (VerificationError, InvalidHashError):
        raise WrongPassword() from None
    check_password(new_password, email=user.email, name=user.name)
    now = utcnow()
    user.password_hash = hash_password(new_password)
    _void_reset_tokens(session, user.id, now)
    conditions = [UserSession.user_id == user.id]
    if keep_token is not None:
        conditions.append(UserSession.token_hash != _token_hash(keep_token))
    _end(session, *conditions, reason="password_changed")
    _announce_password_change(session, user.id, "account", now)
    session.commit()
    return user
