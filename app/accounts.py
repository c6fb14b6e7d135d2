"""Accounts: sign-up, authentication and password reset. Services take a Session and plain values."""

import hashlib
import secrets
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import PasswordResetToken, User
from app.models.base import utcnow

RESET_TOKEN_TTL = timedelta(hours=1)
MIN_PASSWORD_LENGTH = 10
_hasher = PasswordHasher()
# Verifying against this when the email is unknown keeps login timing uniform.
_DUMMY_HASH = _hasher.hash("paydesk-timing-equaliser")


class EmailTaken(Exception):
    pass


class InvalidResetToken(Exception):
    pass


def normalize_email(email: str) -> str:
    return email.strip().lower()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def create_user(session: Session, email: str, password: str, *, is_admin: bool = False, name: str | None = None) -> User:
    """Create an account; raises EmailTaken without writing anything when the email is in use."""
    email = normalize_email(email)
    if session.scalar(select(User.id).where(func.lower(User.email) == email)) is not None:
        raise EmailTaken(email)
    user = User(email=email, password_hash=hash_password(password), is_admin=is_admin, name=name)
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise EmailTaken(email) from None
    return user


def authenticate(session: Session, email: str, password: str) -> User | None:
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
    return user


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_reset_token(session: Session, email: str) -> tuple[User, str] | None:
    """A fresh one-time token for the account, or None when there is no such account
    (the caller must not reveal which)."""
    user = session.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None:
        return None
    token = secrets.token_urlsafe(32)
    session.add(PasswordResetToken(user_id=user.id, token_hash=_token_hash(token), expires_at=utcnow() + RESET_TOKEN_TTL))
    session.commit()
    return user, token


def reset_password(session: Session, token: str, new_password: str) -> User:
    """Use a token once. The conditional UPDATE makes single use hold under concurrency."""
    now = utcnow()
    row = session.scalar(select(PasswordResetToken).where(PasswordResetToken.token_hash == _token_hash(token)))
    if row is None or row.used_at is not None or row.expires_at <= now:
        raise InvalidResetToken()
    claimed = session.execute(
        update(PasswordResetToken)
        .where(PasswordResetToken.id == row.id, PasswordResetToken.used_at.is_(None))
        .values(used_at=now)
    ).rowcount
    if claimed != 1:
        session.rollback()
        raise InvalidResetToken()
    user = session.get(User, row.user_id)
    user.password_hash = hash_password(new_password)
    session.commit()
    return user
