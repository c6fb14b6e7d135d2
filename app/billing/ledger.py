"""The ledger: the only code that changes a customer's funds.

Every change is an append-only `LedgerEntry` with a unique idempotency key; the cached balance
columns on `users` move in the same transaction, by an atomic UPDATE, so they always equal the
sum of the entries. A balance can never go below zero (CHECK constraint + InsufficientFunds).
Nothing here commits: the caller's unit of work does.
"""

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import LedgerEntry, User

BALANCE_COLUMN = {"cash": User.cash_balance_cents, "voucher": User.voucher_balance_cents}


class InsufficientFunds(Exception):
    """The entry would take a balance below zero."""


@dataclass(frozen=True)
class Posted:
    entry: LedgerEntry
    created: bool


def post_entry(
    session: Session,
    *,
    customer_id: int,
    account: str,
    amount_cents: int,
    kind: str,
    idempotency_key: str,
    reference: str | None = None,
    note: str | None = None,
) -> Posted:
    """Append one entry and move the cached balance. Idempotent on `idempotency_key`:
    a second call with the same key changes nothing and returns the first entry."""
    if account not in BALANCE_COLUMN:
        raise ValueError(f"unknown account {account!r}")
    if not isinstance(amount_cents, int) or isinstance(amount_cents, bool):
        raise TypeError("amount_cents must be an int")
    existing = session.scalar(select(LedgerEntry).where(LedgerEntry.idempotency_key == idempotency_key))
    if existing is not None:
        return Posted(existing, False)

    column = BALANCE_COLUMN[account]
    try:
        with session.begin_nested():
            entry = LedgerEntry(
                customer_id=customer_id,
                account=account,
                amount_cents=amount_cents,
                kind=kind,
                reference=reference,
                idempotency_key=idempotency_key,
                note=note,
            )
            session.add(entry)
            session.flush()
            new_balance = session.execute(
                update(User)
                .where(User.id == customer_id)
                .values({column: column + amount_cents})
                .returning(column)
            ).scalar_one()
            if new_balance < 0:
                raise InsufficientFunds(f"{account} balance would become {new_balance}")
    except IntegrityError as exc:
        existing = session.scalar(select(LedgerEntry).where(LedgerEntry.idempotency_key == idempotency_key))
        if existing is not None:
            return Posted(existing, False)
        if "not_negative" in str(exc.orig):
            raise InsufficientFunds(f"{account} balance would go below zero") from exc
        raise
    session.expire(session.get(User, customer_id), ["cash_balance_cents", "voucher_balance_cents"])
    return Posted(entry, True)


def ledger_balance(session: Session, customer_id: int, account: str) -> int:
    """The balance as the sum of entries (the truth the cached column must equal)."""
    return session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount_cents), 0)).where(
            LedgerEntry.customer_id == customer_id, LedgerEntry.account == account
        )
    )
