"""The ledger: the only code that changes a customer's funds.

Every change is an append-only `LedgerEntry` with a unique idempotency key; the cached balance
columns on `users` move in the same transaction, by an atomic UPDATE, so they always equal the
sum of the entries. A balance can never go below zero (CHECK constraint + InsufficientFunds).
Nothing here commits: the caller's unit of work does.
"""

from dataclasses import dataclass

from sqlalchemy import Integer, bindparam, column, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.billing.money import MAX_CENTS
from app.models import LedgerEntry, User
from app.models.base import UTCDateTime, utcnow

MAX_BALANCE_CENTS = MAX_CENTS

BALANCE_COLUMN = {"cash": User.cash_balance_cents, "voucher": User.voucher_balance_cents}


def _move_statement(column):
    """The guarded balance move, built once per account (Core: no ORM bulk-update machinery)."""
    users = User.__table__
    col = users.c[column.key]
    amount = bindparam("amount_cents")
    return (
        update(users)
        .where(users.c.id == bindparam("customer_id"), col + amount >= 0, col + amount <= MAX_BALANCE_CENTS)
        .values({col: col + amount})
        .returning(col)
    )


_MOVE = {account: _move_statement(column) for account, column in BALANCE_COLUMN.items()}
_INSERT_ENTRY: dict[str, object] = {}


def _insert_entry_statement(dialect: str):
    """INSERT … ON CONFLICT (idempotency_key) DO NOTHING RETURNING the entry, built once per dialect."""
    stmt = _INSERT_ENTRY.get(dialect)
    if stmt is None:
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        stmt = _INSERT_ENTRY[dialect] = (
            insert(LedgerEntry)
            .values({name: bindparam(name) for name in _ENTRY_FIELDS})
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(LedgerEntry)
        )
    return stmt


_ENTRY_FIELDS = ("customer_id", "account", "amount_cents", "kind", "reference", "idempotency_key", "note", "created_at")


def _move_and_insert_statement(column_name: str):
    """PostgreSQL: the guarded balance move and the entry's insert in one statement (one round trip).

    Both run on one snapshot, the UPDATE first: the entry is inserted only when the balance moved,
    and `moved` says whether it did, so the caller can tell "guard refused" (moved = 0, no entry)
    from "key already used" (moved = 1, no entry: undone by the caller) exactly as with the two
    statements. Concurrent posts for one customer still queue on the user row lock."""
    entry_columns = ", ".join(c.name for c in LedgerEntry.__table__.columns)
    return (
        text(
            f"WITH moved AS (UPDATE users SET {column_name} = {column_name} + :amount_cents "
            f"WHERE id = :customer_id AND {column_name} + :amount_cents >= 0 "
            f"AND {column_name} + :amount_cents <= {MAX_BALANCE_CENTS} RETURNING id), "
            "entry AS (INSERT INTO ledger_entries "
            "(customer_id, account, amount_cents, kind, reference, idempotency_key, note, created_at) "
            "SELECT :customer_id, :account, :amount_cents, :kind, :reference, :idempotency_key, :note, :created_at "
            f"FROM moved ON CONFLICT (idempotency_key) DO NOTHING RETURNING {entry_columns}) "
            f"SELECT (SELECT count(*) FROM moved) AS moved, {', '.join('entry.' + c.name for c in LedgerEntry.__table__.columns)} "
            "FROM (SELECT 1) AS one LEFT JOIN entry ON true"
        )
        .bindparams(bindparam("created_at", type_=UTCDateTime()))
        .columns(column("moved", Integer), *LedgerEntry.__table__.columns)
    )


_MOVE_AND_INSERT = {account: _move_and_insert_statement(column.key) for account, column in BALANCE_COLUMN.items()}
_MOVE_AND_INSERT_ORM = {
    account: select(LedgerEntry, column("moved", Integer)).from_statement(stmt) for account, stmt in _MOVE_AND_INSERT.items()
}


class InsufficientFunds(Exception):
    """The entry would take a balance below zero."""


class BalanceLimitExceeded(Exception):
    """The entry would take a balance above MAX_BALANCE_CENTS."""


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
    a second call with the same key changes nothing and returns the first entry.

    Two steps on the normal path, both atomic in the database: a guarded
    `UPDATE users SET balance = balance + amount WHERE … AND balance + amount >= 0` (no row:
    InsufficientFunds, nothing written) and `INSERT … ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING` — one statement (one round trip) on PostgreSQL, two elsewhere. When the key already exists (a concurrent or repeated post), the balance move is
    undone in the same transaction and the first entry is returned. Concurrent posts for one customer
    queue on the user row lock taken by the UPDATE."""
    if account not in BALANCE_COLUMN:
        raise ValueError(f"unknown account {account!r}")
    if not isinstance(amount_cents, int) or isinstance(amount_cents, bool):
        raise TypeError("amount_cents must be an int")
    if abs(amount_cents) > MAX_BALANCE_CENTS:
        raise BalanceLimitExceeded(f"an entry of {amount_cents} is beyond the balance limit")
    column = BALANCE_COLUMN[account]
    values = {
        "customer_id": customer_id,
        "account": account,
        "amount_cents": amount_cents,
        "kind": kind,
        "reference": reference,
        "idempotency_key": idempotency_key,
        "note": note,
        "created_at": utcnow(),
    }
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        entry, moved = session.execute(
            _MOVE_AND_INSERT_ORM[account], values, execution_options={"populate_existing": True}
        ).one()
    else:
        moved = (
            session.connection()
            .execute(_MOVE[account], {"customer_id": customer_id, "amount_cents": amount_cents})
            .scalar_one_or_none()
        ) is not None
        entry = None
    if not moved:
        return Posted(_existing_or_refuse(session, customer_id, account, amount_cents, idempotency_key), False)
    if dialect != "postgresql":
        entry = session.scalars(
            _insert_entry_statement(dialect), values, execution_options={"populate_existing": True}
        ).one_or_none()
    if entry is None:  # the key was already used: undo the balance move, return the first entry
        session.execute(
            update(User)
            .where(User.id == customer_id)
            .values({column: column - amount_cents})
            .execution_options(synchronize_session=False)
        )
        _expire_balances(session, customer_id)
        return Posted(_entry_by_key(session, idempotency_key), False)
    _expire_balances(session, customer_id)
    return Posted(entry, True)


def _existing_or_refuse(session: Session, customer_id: int, account: str, amount_cents: int,
                        idempotency_key: str) -> LedgerEntry:
    """The guarded move changed no row: the first entry if the key was already used, otherwise
    say why (no such customer, above the limit, below zero)."""
    existing = _entry_by_key(session, idempotency_key)
    if existing is not None:
        return existing
    if session.get(User, customer_id) is None:
        raise LookupError(f"no customer {customer_id}")
    if amount_cents > 0:
        raise BalanceLimitExceeded(f"{account} balance would exceed {MAX_BALANCE_CENTS}")
    raise InsufficientFunds(f"{account} balance would go below zero")


def _entry_by_key(session: Session, idempotency_key: str) -> LedgerEntry | None:
    return session.scalar(select(LedgerEntry).where(LedgerEntry.idempotency_key == idempotency_key))


def _expire_balances(session: Session, customer_id: int) -> None:
    user = session.identity_map.get(session.identity_key(User, customer_id))
    if user is not None:
        session.expire(user, ["cash_balance_cents", "voucher_balance_cents"])


def ledger_balance(session: Session, customer_id: int, account: str) -> int:
    """The balance as the sum of entries (the truth the cached column must equal)."""
    return session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount_cents), 0)).where(
            LedgerEntry.customer_id == customer_id, LedgerEntry.account == account
        )
    )
