"""Vouchers (SPEC §5): creating batches, disabling, redeeming, and throttling failed redemptions.

Codes. 20 characters from Crockford's base32 alphabet (no I, L, O, U), drawn with `secrets`:
100 bits, shown as five groups of four (`7K3M-QX9D-…`). Input is case-insensitive; spaces and
dashes are ignored, and the look-alikes O→0, I/L→1 are folded, so a code read aloud or typed
sloppily still works.

Storage. Only SHA-256(normalised code) is stored, plus the first group as a non-secret display
prefix. The 16 remaining characters are 80 random bits, so an unkeyed hash cannot be reversed by
guessing (as with password-reset tokens; a keyed HMAC would add nothing here, and would tie
every voucher to a secret that, in the embedded default, changes on each start). A database dump
therefore never yields redeemable codes. The full codes exist in plaintext only in the result
of `create_voucher_batch`: the admin page shows them once and offers them as a CSV built into
that same response (a `data:` link), so nothing keeps them afterwards. A lost code cannot be
recovered; the admin disables the voucher and creates a new one.

Redemption guarantees, enforced by PostgreSQL (not by reading then writing in Python):
- per customer once: unique (voucher_id, customer_id) on `voucher_redemptions`, and the ledger
  idempotency key `voucher:<voucher_id>:<customer_id>`;
- never more than `max_redemptions`: a conditional UPDATE
  `redemptions_count = redemptions_count + 1 WHERE redemptions_count < max_redemptions`
  (plus a CHECK constraint), which also re-checks disabled/expired under the row lock;
- the credit, the redemption, the count and the settlement request commit together or not at all.
"""

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.billing.audit import record_audit
from app.billing.csv_cells import csv_text
from app.billing.ledger import post_entry
from app.billing.money import format_money
from app.billing.money_input import MAX_CENTS, configured_max_cents
from app.billing.settlement_requests import request_settlement
from app.billing.throttle import Throttle
from app.models.base import utcnow
from app.models.voucher import Voucher, VoucherBatch, VoucherRedemption

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
GROUP_SIZE = 4
GROUPS = 5
CODE_LENGTH = GROUP_SIZE * GROUPS  # 100 bits; 80 of them after the displayed prefix
_FOLD = str.maketrans({"O": "0", "I": "1", "L": "1"})
_IGNORED = " \t\r\n-\u2010\u2011\u2012\u2013\u2014\u2212_"
MAX_BATCH = 1000
MAX_REDEMPTIONS = 1_000_000


# ------------------------------------------------------------------ errors ---
class VoucherError(Exception):
    """A redemption was refused. `str(error)` is fit to show to the customer."""

    message = "This voucher cannot be redeemed."
    status = 400

    def __init__(self, message: str | None = None):
        super().__init__(message or self.message)


class MalformedCode(VoucherError):
    message = "That is not a voucher code. Codes look like XXXX-XXXX-XXXX-XXXX-XXXX."
    status = 422


class VoucherNotFound(VoucherError):
    message = "We could not find that voucher code. Check it and try again."
    status = 404


class VoucherExpired(VoucherError):
    message = "This voucher has expired."


class VoucherDisabled(VoucherError):
    message = "This voucher is no longer valid."


class VoucherExhausted(VoucherError):
    message = "This voucher has already been fully redeemed."
    status = 409


class AlreadyRedeemed(VoucherError):
    message = "You have already redeemed this voucher."
    status = 409


class InvalidVoucherBatch(ValueError):
    """The admin's batch parameters are out of range; `str(error)` says which."""


# ------------------------------------------------------------------- codes ---
def generate_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return format_code(raw)


def normalise_code(text: str | None) -> str:
    """The canonical 20-character form of what a person typed, or MalformedCode."""
    cleaned = "".join(ch for ch in (text or "") if ch not in _IGNORED).upper().translate(_FOLD)
    if len(cleaned) != CODE_LENGTH or any(ch not in ALPHABET for ch in cleaned):
        raise MalformedCode()
    return cleaned


def format_code(canonical: str) -> str:
    return "-".join(canonical[i : i + GROUP_SIZE] for i in range(0, len(canonical), GROUP_SIZE))


def valid_until_text(expires_at: datetime | None) -> str:
    """An expiry as the admin entered it: a voucher "valid until 2026-12-31 (inclusive)" is stored
    as expiring at 2027-01-01 00:00 UTC and shown as the inclusive day again."""
    if expires_at is None:
        return "never"
    moment = expires_at.astimezone(UTC)
    if moment.time() == datetime.min.time():
        return f"{moment - timedelta(days=1):%Y-%m-%d} (inclusive)"
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def code_hash(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


# ----------------------------------------------------------------- admin ---
@dataclass(frozen=True)
class CreatedBatch:
    batch: VoucherBatch
    codes: list[tuple[Voucher, str]]  # (voucher, full code) — plaintext only here, only once
    created: bool  # False: this request_key was already used; codes are not shown again


def create_voucher_batch(
    session: Session,
    *,
    actor_id: int | None,
    count: int,
    value_cents: int,
    max_redemptions: int,
    expires_at: datetime | None,
    note: str | None,
    request_key: str,
    codes: list[str] | None = None,
) -> CreatedBatch:
    """Create `count` vouchers with fresh random codes, audit-logged, committed.

    Idempotent on `request_key` (a resubmitted form creates nothing). `codes` lets the demo seed
    a known code; normally they are generated here."""
    if not 1 <= count <= MAX_BATCH:
        raise InvalidVoucherBatch(f"Create between 1 and {MAX_BATCH} vouchers at a time.")
    if value_cents <= 0:
        raise InvalidVoucherBatch("The value must be greater than zero.")
    if not 1 <= max_redemptions <= MAX_REDEMPTIONS:
        raise InvalidVoucherBatch("Maximum redemptions must be at least 1.")
    if value_cents > configured_max_cents("VOUCHER_VALUE_MAX_CENTS", 100_000):
        raise InvalidVoucherBatch(
            f"A voucher is worth at most {format_money(configured_max_cents('VOUCHER_VALUE_MAX_CENTS', 100_000))}."
        )
    batch_limit = configured_max_cents("VOUCHER_BATCH_MAX_CENTS", 10_000_000)
    if count * value_cents * max_redemptions > batch_limit:
        raise InvalidVoucherBatch(
            f"This batch would be worth {format_money(min(count * value_cents * max_redemptions, MAX_CENTS))} "
            f"(value × codes × redemptions); the limit is {format_money(batch_limit)}."
        )
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidVoucherBatch("The expiry must be in the future.")
    note = (note or "").strip() or None

    existing = session.scalar(select(VoucherBatch).where(VoucherBatch.request_key == request_key))
    if existing is not None:
        return CreatedBatch(existing, [], False)

    canonical_codes = [normalise_code(c) for c in codes] if codes else [normalise_code(generate_code()) for _ in range(count)]
    batch = VoucherBatch(
        request_key=request_key,
        count=len(canonical_codes),
        value_cents=value_cents,
        max_redemptions=max_redemptions,
        expires_at=expires_at,
        note=note,
        created_by=actor_id,
    )
    session.add(batch)
    created = []
    for canonical in canonical_codes:
        voucher = Voucher(
            batch=batch,
            code_hash=code_hash(canonical),
            code_prefix=canonical[:GROUP_SIZE],
            value_cents=value_cents,
            max_redemptions=max_redemptions,
            redemptions_count=0,
            expires_at=expires_at,
            note=note,
        )
        session.add(voucher)
        created.append((voucher, format_code(canonical)))
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        existing = session.scalar(select(VoucherBatch).where(VoucherBatch.request_key == request_key))
        if existing is not None:
            return CreatedBatch(existing, [], False)
        raise
    record_audit(
        session,
        actor_id,
        "voucher.batch_created",
        "voucher_batch",
        batch.id,
        after={
            "count": batch.count,
            "value_cents": value_cents,
            "max_redemptions": max_redemptions,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "note": note,
            "voucher_ids": [v.id for v, _ in created],
            "code_prefixes": [v.code_prefix for v, _ in created],
        },
    )
    session.commit()
    return CreatedBatch(batch, created, True)


def disable_voucher(session: Session, *, actor_id: int | None, voucher_id: int) -> Voucher:
    """Disable a voucher (idempotent; audit-logged once). Redemptions already made stand:
    voucher balance is never taken back."""
    voucher = session.scalar(select(Voucher).where(Voucher.id == voucher_id).with_for_update())
    if voucher is None:
        session.rollback()
        raise LookupError(voucher_id)
    if voucher.disabled_at is None:
        voucher.disabled_at = utcnow()
        voucher.disabled_by = actor_id
        record_audit(
            session,
            actor_id,
            "voucher.disabled",
            "voucher",
            voucher.id,
            before={"disabled": False},
            after={"disabled": True, "redemptions_count": voucher.redemptions_count},
        )
    session.commit()
    return voucher


def list_vouchers(session: Session, *, batch_id: int | None = None, limit: int = 200) -> list[Voucher]:
    query = select(Voucher).order_by(Voucher.id.desc()).limit(limit)
    if batch_id is not None:
        query = query.where(Voucher.batch_id == batch_id)
    return list(session.scalars(query))


def codes_csv(created: CreatedBatch) -> str:
    """The batch's codes as CSV; cells are neutralised like every export (`csv_cells`)."""
    header = ["code", "voucher_id", "batch_id", "value_cents", "max_redemptions", "expires_at", "note"]
    rows = (
        [
            code,
            voucher.id,
            created.batch.id,
            voucher.value_cents,
            voucher.max_redemptions,
            voucher.expires_at.isoformat() if voucher.expires_at else "",
            voucher.note or "",
        ]
        for voucher, code in created.codes
    )
    return csv_text(header, rows)


def codes_csv_data_url(created: CreatedBatch) -> str:
    """The CSV as a `data:` URL, so the page that shows the codes once can also offer them for
    download without the server keeping them."""
    payload = base64.b64encode(codes_csv(created).encode("utf-8")).decode("ascii")
    return f"data:text/csv;charset=utf-8;base64,{payload}"


# ------------------------------------------------------------ redemption ---
@dataclass(frozen=True)
class Redeemed:
    voucher_id: int
    amount_cents: int


def redeem_voucher(session: Session, *, customer_id: int, code: str, now: datetime | None = None) -> Redeemed:
    """Credit the voucher's value to the customer's voucher balance and request settlement, in one
    committed transaction; or raise a VoucherError having changed nothing."""
    now = now or utcnow()
    canonical = normalise_code(code)
    voucher = session.scalar(select(Voucher).where(Voucher.code_hash == code_hash(canonical)))
    if voucher is None:
        session.rollback()
        raise VoucherNotFound()
    voucher_id = voucher.id
    _raise_if_unusable(session, voucher, customer_id, now)

    try:
        redemption = VoucherRedemption(voucher_id=voucher_id, customer_id=customer_id, amount_cents=voucher.value_cents)
        session.add(redemption)
        session.flush()  # unique (voucher_id, customer_id): a concurrent twin waits here, then fails
    except IntegrityError:
        session.rollback()
        raise AlreadyRedeemed() from None

    amount_cents = session.execute(
        update(Voucher)
        .where(
            Voucher.id == voucher_id,
            Voucher.redemptions_count < Voucher.max_redemptions,
            Voucher.disabled_at.is_(None),
            or_(Voucher.expires_at.is_(None), Voucher.expires_at > now),
        )
        .values(redemptions_count=Voucher.redemptions_count + 1)
        .returning(Voucher.value_cents)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if amount_cents is None:
        session.rollback()
        _raise_if_unusable(session, session.get(Voucher, voucher_id, populate_existing=True), customer_id, now)
        raise VoucherExhausted()

    posted = post_entry(
        session,
        customer_id=customer_id,
        account="voucher",
        amount_cents=amount_cents,
        kind="voucher",
        idempotency_key=f"voucher:{voucher_id}:{customer_id}",
        reference=f"voucher:{voucher_id}",
        note=f"Voucher {voucher.code_prefix}-…",
    )
    redemption.amount_cents = amount_cents
    redemption.ledger_entry_id = posted.entry.id
    request_settlement(session, customer_id)
    session.commit()
    return Redeemed(voucher_id, amount_cents)


def _raise_if_unusable(session: Session, voucher: Voucher, customer_id: int, now: datetime) -> None:
    if voucher.disabled_at is not None:
        session.rollback()
        raise VoucherDisabled()
    if voucher.expires_at is not None and voucher.expires_at <= now:
        session.rollback()
        raise VoucherExpired()
    already = session.scalar(
        select(VoucherRedemption.id).where(
            VoucherRedemption.voucher_id == voucher.id, VoucherRedemption.customer_id == customer_id
        )
    )
    if already is not None:
        session.rollback()
        raise AlreadyRedeemed()
    if voucher.redemptions_count >= voucher.max_redemptions:
        session.rollback()
        raise VoucherExhausted()


# -------------------------------------------------------------- throttle ---
def redemption_throttle(storage) -> Throttle:
    """Failed redemptions, per customer and per IP (SPEC §5). Only failures count, so redeeming
    many valid vouchers is never blocked; a limited key is refused before the code is looked at
    (a valid code too). The per-IP limit is five times the per-customer one, so one customer's
    guesses never lock out another customer behind the same address."""
    return Throttle(storage, "voucher-redeem-failures", REDEMPTION_FAILURE_LIMITS)


REDEMPTION_FAILURE_LIMITS = {"customer": "10 per 10 minutes", "ip": "50 per 10 minutes"}


# ------------------------------------------------------------------ demo ---
# Printed exactly as stored (and listed): "O" folds to "0" in codes, so the demo code is spelt with 0.
DEMO_VOUCHER_CODE = "DEM0-2026-PAYD-ESK0-C0DE"


def ensure_demo_voucher(session: Session, actor_id: int | None = None) -> str:
    """The embedded default's demo voucher ($50, 1000 redemptions, no expiry). Idempotent.
    Its code is public by design; real codes are random."""
    create_voucher_batch(
        session,
        actor_id=actor_id,
        count=1,
        value_cents=5000,
        max_redemptions=1000,
        expires_at=None,
        note="Demo voucher",
        request_key="demo-voucher",
        codes=[DEMO_VOUCHER_CODE],
    )
    return DEMO_VOUCHER_CODE
