"""The settlement engine (SPEC §8): pay a customer's open invoices from what they have.

Order: open invoices by amount due ascending, oldest first on ties (so limited funds pay as many
invoices as possible). Each invoice is paid from 1. the voucher balance, 2. the cash balance,
3. the default card, 4. the other usable cards (newest first) when a card declines.

Guarantees and how they hold:
- One settlement per customer at a time: a PostgreSQL advisory lock (one key space, so both forms
  exclude each other; the database drops it if the worker dies). The usual run — funds arrived and
  the balances pay what is due, no card involved — is ONE transaction holding the
  transaction-level lock (`pg_advisory_xact_lock`): lock, read the request, pay, clear the request,
  commit. Anything else (a card to charge, an attempt to re-drive, nothing to pay with) falls back
  to the full engine below under a session-level lock on a dedicated connection, held across the
  transactions around each Stripe call. On SQLite a per-process lock (the embedded default runs
  jobs on one in-process thread).
- Balances: the voucher/cash part runs in one transaction that locks the user row and the invoices
  (`FOR UPDATE`). Each balance payment is a negative ledger entry whose idempotency key is derived
  from the invoice and what it had been paid before, plus an `InvoicePayment` — a re-run cannot pay
  twice, and the ledger's CHECK/InsufficientFunds keep balances from going below zero.
- Cards: an attempt row (`pending`, idempotency key `paydesk-invoice-<id>-attempt-<n>`) is committed
  BEFORE Stripe is called; then the outcome is recorded. A timeout/5xx leaves it `unknown`; every
  run first re-drives `pending`/`unknown` attempts by re-sending the SAME key and the same amount,
  so a crashed or timed-out charge is never made twice. While an invoice has an unresolved attempt,
  nothing else is charged or applied to it. A card that declined an invoice is not retried for that
  invoice within DECLINE_RETRY_INTERVAL (a new or newly-default card is tried at once).
- Coalescing: the outbox row (`settlement_requests`) is deleted at the end only if its generation
  is the one this run started with; if a new request arrived meanwhile, the run goes round again.
  If a charge outcome is still unknown the row is kept so the periodic sweep comes back.
"""

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Connection, bindparam, delete, func, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from app.billing import notifications
from app.billing.cards import usable_cards
from app.billing.invoices import apply_payment, lock_invoice, pay_from_balance
from app.billing.ledger import post_entry
from app.billing.recovery import recheck_deletion_marks
from app.models import BillingCustomer, Card, ChargeAttempt, Invoice, SettlementRequest, User
from app.models.base import utcnow
from app.payments import gateway

log = logging.getLogger(__name__)
SETTLEMENT_LOCK_CLASS = 7_300_801  # first key of pg_advisory_lock(int, int); second = customer id
LOCK_WAIT_SECONDS = 120
MAX_ROUNDS = 5
DECLINE_RETRY_INTERVAL = timedelta(hours=24)
UNRESOLVED = ("pending", "unknown")
REFUSED = ("declined", "requires_action", "failed")
_local_locks: dict[int, threading.Lock] = {}
_local_locks_guard = threading.Lock()


class SettlementBusy(Exception):
    """Another settlement of this customer holds the lock (and will see the request)."""


@dataclass
class SettlementReport:
    customer_id: int
    busy: bool = False
    rounds: int = 0
    payments: list[tuple[int, str, int]] = field(default_factory=list)  # (invoice id, source, cents)
    paid_invoice_ids: list[int] = field(default_factory=list)
    card_attempts: int = 0
    unresolved_attempts: int = 0
    request_cleared: bool = False
    waiting: list[int] = field(default_factory=list)  # others' waiting requests (see `waiting_limit`)

    @property
    def complete(self) -> bool:
        return not self.busy and self.unresolved_attempts == 0


def attempt_idempotency_key(invoice_id: int, attempt_no: int) -> str:
    return f"paydesk-invoice-{invoice_id}-attempt-{attempt_no}"


# ------------------------------------------------------------------- lock ---
@contextmanager
def lock_connection(session: Session) -> Iterator[Connection | None]:
    """An autocommit connection that holds settlement advisory locks (None off PostgreSQL).
    Bulk callers open one for many customers instead of one per customer."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        yield None
        return
    engine = bind.engine if hasattr(bind, "engine") else bind
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        yield conn


@contextmanager
def customer_settlement_lock(
    session: Session, customer_id: int, *, wait: bool = True, conn: Connection | None = None
) -> Iterator[bool]:
    """Yield True while holding the customer's settlement lock, False if `wait` is off and it is taken."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        with _local_locks_guard:
            lock = _local_locks.setdefault(customer_id, threading.Lock())
        acquired = lock.acquire(timeout=LOCK_WAIT_SECONDS) if wait else lock.acquire(blocking=False)
        try:
            yield acquired
        finally:
            if acquired:
                lock.release()
        return
    if conn is None:
        with lock_connection(session) as own:
            with customer_settlement_lock(session, customer_id, wait=wait, conn=own) as acquired:
                yield acquired
        return
    params = {"k": SETTLEMENT_LOCK_CLASS, "c": customer_id}
    if wait:
        conn.execute(text(f"SET lock_timeout = '{LOCK_WAIT_SECONDS}s'"))
        try:
            conn.execute(text("SELECT pg_advisory_lock(:k, :c)"), params)
        except Exception as exc:
            raise SettlementBusy(f"customer {customer_id} is being settled") from exc
        acquired = True
    else:
        acquired = conn.execute(text("SELECT pg_try_advisory_lock(:k, :c)"), params).scalar_one()
    try:
        yield acquired
    finally:
        if acquired:
            conn.execute(text("SELECT pg_advisory_unlock(:k, :c)"), params)


# ------------------------------------------------------------ entry point ---
def settle_customer(
    session: Session,
    customer_id: int,
    *,
    wait: bool = True,
    only_if_requested: bool = False,
    lock_conn: Connection | None = None,
    waiting_limit: int = 0,
) -> SettlementReport:
    """Settle one customer's open invoices (see the module docstring). Commits its own work.

    `wait=False` returns at once (report.busy) when another settlement of the customer is running;
    `only_if_requested=True` does nothing unless a settlement request (or an unresolved card
    attempt) is waiting — how duplicate jobs coalesce into one run. `lock_conn` (from
    `lock_connection`) lets a bulk caller reuse one lock-holding connection. With
    `only_if_requested` on PostgreSQL, `waiting_limit` > 0 also reports (`report.waiting`, read in
    the run's first statement) up to that many other customers whose requests are waiting, oldest
    first, without an unresolved card attempt: what a job may drain (jobs.settlement)."""
    report = SettlementReport(customer_id)
    session.rollback()
    try:
        if lock_conn is None and session.get_bind().dialect.name == "postgresql":
            if _settle_in_one_transaction(session, customer_id, report, wait, only_if_requested, waiting_limit):
                return report
        with customer_settlement_lock(session, customer_id, wait=wait, conn=lock_conn) as acquired:
            if not acquired:
                report.busy = True
                return report
            _settle_rounds(session, customer_id, report, only_if_requested)
    except SettlementBusy:
        report.busy = True
    except Exception:
        session.rollback()
        raise
    return report


# lock_timeout is set for this transaction only (set_config(..., true)) before the lock is waited for
_XACT_LOCK = text("SELECT set_config('lock_timeout', :timeout, true), pg_advisory_xact_lock(:k, :c)")
_XACT_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(:k, :c)")
_REQUESTED = (
    "EXISTS (SELECT 1 FROM settlement_requests WHERE customer_id = :c) OR "
    "EXISTS (SELECT 1 FROM charge_attempts WHERE customer_id = :c AND status IN ('pending', 'unknown'))"
)
_OTHERS_WAITING = (
    "ARRAY(SELECT r.customer_id FROM settlement_requests r WHERE r.customer_id <> :c AND NOT EXISTS "
    "(SELECT 1 FROM charge_attempts a WHERE a.customer_id = r.customer_id AND a.status IN ('pending', 'unknown')) "
    "ORDER BY r.requested_at LIMIT :waiting_limit)"
)
# A job's first statement: is anything requested (a request row, or an unresolved card attempt)?
# Only then the customer's lock — a job's request committed before the job was enqueued, so a row
# gone now means a settlement that saw it has finished: nothing to wait for the lock for. Then who
# else is waiting. One round trip; the lock is the last thing it does (set_config before it).
_LOCK_IF_REQUESTED = text(
    f"SELECT w.requested, CASE WHEN w.requested THEN set_config('lock_timeout', :timeout, true) END, "
    f"CASE WHEN w.requested THEN pg_advisory_xact_lock(:k, :c) IS NOT NULL END, w.waiting "
    f"FROM (SELECT {_REQUESTED} AS requested, {_OTHERS_WAITING} AS waiting) w"
)
_TRY_LOCK_IF_REQUESTED = text(
    f"SELECT w.requested, NULL, CASE WHEN w.requested THEN pg_try_advisory_xact_lock(:k, :c) END, w.waiting "
    f"FROM (SELECT {_REQUESTED} AS requested, {_OTHERS_WAITING} AS waiting) w"
)
# Under the lock, in its own statement (a snapshot taken AFTER the lock was granted): the request's
# generation, whether a card attempt is unresolved, and the balances, with the user row locked.
_STATE_AND_BALANCES = text(
    "SELECT (SELECT generation FROM settlement_requests WHERE customer_id = :c), "
    "EXISTS (SELECT 1 FROM charge_attempts WHERE customer_id = :c AND status IN ('pending', 'unknown')), "
    "u.voucher_balance_cents, u.cash_balance_cents FROM users u WHERE u.id = :c FOR UPDATE OF u"
)
_LOCK_NOT_AVAILABLE = "55P03"


def _settle_in_one_transaction(
    session: Session, customer_id: int, report: SettlementReport, wait: bool, only_if_requested: bool,
    waiting_limit: int = 0,
) -> bool:
    """PostgreSQL: the balance-only settlement as one transaction under the customer's
    transaction-level advisory lock (same key as the session-level one). Returns True when the
    report is final, False when the full engine must run (an unresolved card attempt, or something
    left to pay that the balances cannot: cards, or nothing to pay with). What it paid is committed
    either way; the full engine then finds it paid."""
    params = {"k": SETTLEMENT_LOCK_CLASS, "c": customer_id}
    timeout = f"{LOCK_WAIT_SECONDS}s"
    locked = False
    try:
        if only_if_requested:
            with _lock_not_available_is_busy():
                requested, _timeout_set, acquired, waiting = session.execute(
                    _LOCK_IF_REQUESTED if wait else _TRY_LOCK_IF_REQUESTED,
                    {**params, "timeout": timeout, "waiting_limit": max(waiting_limit, 0)},
                ).one()
            report.waiting = list(waiting)
            if not requested:
                session.rollback()
                return True
            if not acquired:
                raise _LockNotGranted
            locked = True
        while report.rounds < MAX_ROUNDS:
            if not locked:
                with _lock_not_available_is_busy():
                    if wait:
                        session.execute(_XACT_LOCK, {**params, "timeout": timeout})
                    elif not session.execute(_XACT_TRY_LOCK, params).scalar_one():
                        raise _LockNotGranted
            locked = False
            state = session.execute(_STATE_AND_BALANCES, params).one_or_none()
            if state is None:  # no such customer
                session.rollback()
                return True
            generation, unresolved, voucher, cash = state
            if unresolved:
                session.rollback()
                return False
            if only_if_requested and generation is None and report.rounds == 0:
                session.rollback()
                return True
            report.rounds += 1
            nothing_left, cleared = _pay_from_balances(  # commits
                session, customer_id, set(), report, generation, balances=(voucher, cash)
            )
            if cleared:
                report.request_cleared = True
                return True
            if not nothing_left:
                return False
            if generation is None:
                return True
            # everything is paid but the request was not cleared: asked again meanwhile, go round
    except _LockNotGranted:
        session.rollback()
        report.busy = True
    return True


class _LockNotGranted(Exception):
    """The customer's lock was not granted (taken, or lock_timeout): another settlement runs."""


@contextmanager
def _lock_not_available_is_busy() -> Iterator[None]:
    try:
        yield
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
            raise
        raise _LockNotGranted from exc


def _settle_rounds(session: Session, customer_id: int, report: SettlementReport, only_if_requested: bool) -> None:
    for _ in range(MAX_ROUNDS):
        generation = session.scalar(
            select(SettlementRequest.generation).where(SettlementRequest.customer_id == customer_id)
        )
        if only_if_requested and generation is None and report.rounds == 0 and not _has_unresolved(session, customer_id):
            session.rollback()
            return
        report.rounds += 1
        if _settle_once(session, customer_id, report, generation):
            report.request_cleared = True
            return
        if generation is None or not report.complete:
            return
        if _clear_request(session, customer_id, generation):
            session.commit()
            report.request_cleared = True
            return
        session.commit()


def _clear_request(session: Session, customer_id: int, generation: int) -> bool:
    """Delete the outbox row unless a new request arrived (generation moved). Does not commit."""
    return bool(
        session.execute(
            delete(SettlementRequest).where(
                SettlementRequest.customer_id == customer_id, SettlementRequest.generation == generation
            )
        ).rowcount
    )


def _has_unresolved(session: Session, customer_id: int) -> bool:
    return (
        session.scalar(
            select(func.count(ChargeAttempt.id)).where(
                ChargeAttempt.customer_id == customer_id, ChargeAttempt.status.in_(UNRESOLVED)
            )
        )
        > 0
    )


def _open_invoices(session: Session, customer_id: int, *, lock: bool = False) -> list[Invoice]:
    """Open invoices with something due, in settlement order: smallest due first, oldest on ties."""
    query = (
        select(Invoice)
        .where(Invoice.customer_id == customer_id, Invoice.state == "open", Invoice.total_cents > Invoice.paid_cents)
        .order_by(Invoice.total_cents - Invoice.paid_cents, Invoice.issued_at, Invoice.id)
        .execution_options(populate_existing=True)
    )
    if lock:
        query = query.with_for_update()
    return list(session.scalars(query))


def _settle_once(session: Session, customer_id: int, report: SettlementReport, generation: int | None) -> bool:
    """One pass. Returns True when it already cleared the request (nothing was left to pay)."""
    report.unresolved_attempts = 0
    blocked = _redrive_unresolved_attempts(session, customer_id, report)
    nothing_left, cleared = _pay_from_balances(session, customer_id, blocked, report, generation)
    if not nothing_left:
        _pay_with_cards(session, customer_id, blocked, report)
    return cleared


# --------------------------------------------------------------- balances ---
_LOCKED_BALANCES = (
    select(User.voucher_balance_cents, User.cash_balance_cents).where(User.id == bindparam("c")).with_for_update()
)


def _pay_from_balances(
    session: Session, customer_id: int, blocked: set[int], report: SettlementReport, generation: int | None,
    *, balances: tuple[int, int] | None = None,
) -> tuple[bool, bool]:
    """One transaction: voucher, then cash, across invoices in cost order. Returns (nothing left
    to pay, request cleared). When the balances paid everything, the request row is deleted in the
    same transaction (one commit for the whole settlement). `balances` (voucher, cash): read by
    the caller in this transaction with the user row locked; otherwise they are read so here.
    The payments and invoice changes are flushed together once every invoice is done (each ledger
    entry is still one guarded statement, in cost order)."""
    try:
        if balances is None:
            balances = session.execute(_LOCKED_BALANCES, {"c": customer_id}).one_or_none()
            if balances is None:
                session.rollback()
                return True, False
        voucher, cash = balances
        if voucher <= 0 and cash <= 0:
            session.rollback()
            return False, False
        remaining = False
        with session.no_autoflush:
            for invoice in _open_invoices(session, customer_id, lock=True):
                if invoice.id in blocked or (voucher <= 0 and cash <= 0):
                    remaining = True
                    continue
                for account in ("voucher", "cash"):
                    available = voucher if account == "voucher" else cash
                    amount = min(available, invoice.amount_due_cents)
                    if amount <= 0:
                        continue
                    if pay_from_balance(session, invoice, account, amount, flush=False) is not None:
                        report.payments.append((invoice.id, account, amount))
                    if account == "voucher":
                        voucher -= amount
                    else:
                        cash -= amount
                if invoice.state == "paid":
                    report.paid_invoice_ids.append(invoice.id)
                else:
                    remaining = True
        session.flush()
        cleared = False
        if not remaining and not blocked and generation is not None:
            cleared = _clear_request(session, customer_id, generation)
        session.commit()
        return not remaining, cleared
    except Exception:
        session.rollback()
        raise


# ------------------------------------------------------------------ cards ---
def _stripe_customer_id(session: Session, customer_id: int) -> str | None:
    return session.scalar(select(BillingCustomer.stripe_customer_id).where(BillingCustomer.customer_id == customer_id))


def _pay_with_cards(session: Session, customer_id: int, blocked: set[int], report: SettlementReport) -> None:
    invoices = [i for i in _open_invoices(session, customer_id) if i.id not in blocked]
    if not invoices or _stripe_customer_id(session, customer_id) is None:
        session.rollback()
        return
    cards = usable_cards(session, customer_id)
    session.rollback()
    if not cards:
        return
    card_ids = [card.id for card in cards]
    for invoice in invoices:
        outcome = _charge_invoice(session, invoice.id, card_ids, report)
        if outcome == "unknown":
            return  # the provider is not answering: stop charging; the sweep comes back


def _charge_invoice(session: Session, invoice_id: int, card_ids: list[int], report: SettlementReport) -> str:
    """Try the cards in order until one pays the amount due. Returns succeeded | unpaid | unknown."""
    since = utcnow() - DECLINE_RETRY_INTERVAL
    refused = set(
        session.scalars(
            select(ChargeAttempt.card_id).where(
                ChargeAttempt.invoice_id == invoice_id,
                ChargeAttempt.status.in_(REFUSED),
                ChargeAttempt.created_at >= since,
            )
        )
    )
    session.rollback()
    candidates = [card_id for card_id in card_ids if card_id not in refused]
    for position, card_id in enumerate(candidates):
        attempt_id = _record_pending_attempt(session, invoice_id, card_id)
        if attempt_id is None:
            return "unpaid"
        report.card_attempts += 1
        # the last card's refusal tells the customer (in the transaction that records it)
        status = _send_attempt(session, attempt_id, report, last_card=position == len(candidates) - 1)
        if status == "succeeded":
            return "succeeded"
        if status in UNRESOLVED:
            return "unknown"
    return "unpaid"


def _record_pending_attempt(session: Session, invoice_id: int, card_id: int) -> int | None:
    """Step 1 of a charge: the attempt row, committed before Stripe hears of it."""
    try:
        invoice = lock_invoice(session, invoice_id)
        if invoice.state != "open" or invoice.amount_due_cents <= 0:
            session.rollback()
            return None
        attempt_no = (
            session.scalar(select(func.max(ChargeAttempt.attempt_no)).where(ChargeAttempt.invoice_id == invoice_id)) or 0
        ) + 1
        attempt = ChargeAttempt(
            invoice_id=invoice_id,
            customer_id=invoice.customer_id,
            card_id=card_id,
            attempt_no=attempt_no,
            idempotency_key=attempt_idempotency_key(invoice_id, attempt_no),
            amount_cents=invoice.amount_due_cents,
            status="pending",
        )
        session.add(attempt)
        session.commit()
        return attempt.id
    except IntegrityError:
        session.rollback()
        return None
    except Exception:
        session.rollback()
        raise


def _send_attempt(session: Session, attempt_id: int, report: SettlementReport, *, last_card: bool = False) -> str:
    """Steps 2 and 3: call Stripe with the attempt's key, then record the outcome. When `last_card`
    (no other card left to try) a refusal queues the "payment failed" notification."""
    attempt = session.get(ChargeAttempt, attempt_id, populate_existing=True)
    card = session.get(Card, attempt.card_id)
    invoice = session.get(Invoice, attempt.invoice_id)
    stripe_customer_id = _stripe_customer_id(session, attempt.customer_id)
    params = dict(
        stripe_customer_id=stripe_customer_id,
        payment_method_id=card.stripe_payment_method_id,
        amount_cents=attempt.amount_cents,
        currency=invoice.currency,
        idempotency_key=attempt.idempotency_key,
        metadata={"paydesk_purpose": "invoice", "paydesk_invoice_id": str(invoice.id),
                  "paydesk_customer_id": str(attempt.customer_id), "paydesk_invoice_number": invoice.number or ""},
    )
    session.rollback()  # no transaction (and no lock) open while Stripe is called
    try:
        charge = gateway.charge_off_session(**params)
    except gateway.PaymentOutcomeUnknown as exc:
        return _record_outcome(session, attempt_id, "unknown", report, error=exc, notify=last_card)
    except gateway.AuthenticationRequired as exc:
        return _record_outcome(session, attempt_id, "requires_action", report, error=exc, notify=last_card)
    except gateway.CardDeclined as exc:
        return _record_outcome(session, attempt_id, "declined", report, error=exc, notify=last_card)
    except gateway.PaymentRequestInvalid as exc:
        return _record_outcome(session, attempt_id, "failed", report, error=exc, notify=last_card)
    except Exception as exc:  # anything unexpected: the charge may have happened
        log.exception("charge attempt %s: unexpected error", attempt_id)
        return _record_outcome(session, attempt_id, "unknown", report, error=exc, notify=last_card)
    return _record_success(session, attempt_id, charge, report)


def _record_outcome(session: Session, attempt_id: int, status: str, report: SettlementReport, *, error,
                    notify: bool = False) -> str:
    try:
        attempt = session.get(ChargeAttempt, attempt_id, with_for_update=True, populate_existing=True)
        if attempt.status in UNRESOLVED:
            attempt.status = status
            attempt.error_code = getattr(error, "code", None) or type(error).__name__
            attempt.error_message = str(error)[:2000]
            attempt.payment_intent_id = getattr(error, "payment_intent_id", None) or attempt.payment_intent_id
            if notify and status in REFUSED:
                session.flush()
                invoice_number = session.scalar(select(Invoice.number).where(Invoice.id == attempt.invoice_id))
                notifications.announce_payment_failed(session, attempt, invoice_number)
        session.commit()
    except Exception:
        session.rollback()
        raise
    if status in UNRESOLVED:
        report.unresolved_attempts += 1
    return status


def _record_success(session: Session, attempt_id: int, charge: gateway.Charge, report: SettlementReport) -> str:
    """The card paid: one InvoicePayment per attempt (unique charge_attempt_id). Money that is no
    longer due (invoice voided or paid meanwhile) is credited to the cash balance, never lost."""
    try:
        attempt = session.get(ChargeAttempt, attempt_id, with_for_update=True, populate_existing=True)
        invoice = lock_invoice(session, attempt.invoice_id)
        if attempt.status != "succeeded":
            attempt.status = "succeeded"
            attempt.payment_intent_id = charge.payment_intent_id
            attempt.error_code = attempt.error_message = None
            charged = attempt.amount_cents
            applied = min(charged, invoice.amount_due_cents) if invoice.state == "open" else 0
            if applied > 0:
                apply_payment(
                    session, invoice, source="card", amount_cents=applied, charge_attempt_id=attempt.id,
                    payment_intent_id=charge.payment_intent_id, reference=invoice.number,
                )
                report.payments.append((invoice.id, "card", applied))
                if invoice.state == "paid":
                    report.paid_invoice_ids.append(invoice.id)
            if charged > applied:
                post_entry(
                    session, customer_id=attempt.customer_id, account="cash", amount_cents=charged - applied,
                    kind="card_overpayment", idempotency_key=f"charge-attempt:{attempt.id}:overpayment",
                    reference=charge.payment_intent_id, note=f"Card payment for invoice {invoice.number} no longer due",
                )
        session.commit()
    except Exception:
        session.rollback()
        raise
    return "succeeded"


def _no_other_card_to_try(session: Session, attempt_id: int) -> bool:
    """True when, should this attempt be refused, no other usable card is left to try for its
    invoice (then the refusal tells the customer, as the last card of a normal run does)."""
    attempt = session.get(ChargeAttempt, attempt_id)
    refused = set(session.scalars(
        select(ChargeAttempt.card_id).where(
            ChargeAttempt.invoice_id == attempt.invoice_id, ChargeAttempt.status.in_(REFUSED),
            ChargeAttempt.created_at >= utcnow() - DECLINE_RETRY_INTERVAL,
        )
    ))
    others = [c.id for c in usable_cards(session, attempt.customer_id) if c.id != attempt.card_id and c.id not in refused]
    session.rollback()
    return not others


def _redrive_unresolved_attempts(session: Session, customer_id: int, report: SettlementReport) -> set[int]:
    """Re-send every pending/unknown attempt with its own key (never a new charge). Returns the
    invoices whose outcome is still unknown: they are left alone this round."""
    attempt_ids = list(
        session.scalars(
            select(ChargeAttempt.id)
            .where(ChargeAttempt.customer_id == customer_id, ChargeAttempt.status.in_(UNRESOLVED))
            .order_by(ChargeAttempt.id)
        )
    )
    blocked: set[int] = set()
    if not attempt_ids:
        return blocked  # the usual case: keep the read transaction going into the balance phase
    session.rollback()
    for attempt_id in attempt_ids:
        status = _send_attempt(session, attempt_id, report, last_card=_no_other_card_to_try(session, attempt_id))
        if status in UNRESOLVED:
            blocked.add(session.get(ChargeAttempt, attempt_id).invoice_id)
            session.rollback()
    return blocked


def customers_with_unresolved_attempts(
    session: Session, older_than: timedelta, limit: int = 500, *, unknown_older_than: timedelta | None = None
) -> list[int]:
    """Customers with a `pending` attempt unchanged for `older_than` (its worker died between
    recording it and recording the outcome: a running one holds the customer's lock and is skipped)
    or an `unknown` one unchanged for `unknown_older_than` (default the same; longer backs off from a
    provider that is not answering)."""
    now = utcnow()
    pending_cutoff = now - older_than
    unknown_cutoff = now - (older_than if unknown_older_than is None else unknown_older_than)
    return list(
        session.scalars(
            select(ChargeAttempt.customer_id)
            .where(
                ((ChargeAttempt.status == "pending") & (ChargeAttempt.updated_at <= pending_cutoff))
                | ((ChargeAttempt.status == "unknown") & (ChargeAttempt.updated_at <= unknown_cutoff))
            )
            .group_by(ChargeAttempt.customer_id)
            .order_by(func.min(ChargeAttempt.id))
            .limit(limit)
        )
    )


# ------------------------------------------------------------ bulk balances ---
_BULK_SQL = [
    # customers this run may settle: no unresolved card attempt, not being settled elsewhere
    # (transaction-level advisory lock in the same key space as settle_customer's), rows FOR UPDATE
    """CREATE TEMP TABLE bulk_customers ON COMMIT DROP AS
       SELECT u.id AS customer_id, CAST(0 AS bigint) AS voucher, CAST(0 AS bigint) AS cash,
              CAST(NULL AS bigint) AS generation
       FROM users u
       WHERE u.id = ANY(CAST(:ids AS integer[]))
         AND NOT EXISTS (SELECT 1 FROM charge_attempts a WHERE a.customer_id = u.id
                         AND a.status IN ('pending', 'unknown'))""",
    # evaluated exactly once per listed customer (a temp-table scan, not a plan over all users)
    """DELETE FROM bulk_customers WHERE NOT pg_try_advisory_xact_lock(:lock_class, customer_id)""",
    """UPDATE bulk_customers c SET generation = r.generation FROM settlement_requests r
       WHERE r.customer_id = c.customer_id""",
    """SELECT 1 FROM users WHERE id IN (SELECT customer_id FROM bulk_customers) ORDER BY id FOR UPDATE""",
    # balances read only once the rows are locked
    """UPDATE bulk_customers c SET voucher = u.voucher_balance_cents, cash = u.cash_balance_cents
       FROM users u WHERE u.id = c.customer_id""",
    """SELECT 1 FROM invoices WHERE customer_id IN (SELECT customer_id FROM bulk_customers)
       AND state = 'open' ORDER BY id FOR UPDATE""",
    # allocation in settlement order: funds before invoice i = voucher + cash − what earlier invoices took
    """CREATE TEMP TABLE bulk_alloc ON COMMIT DROP AS
       WITH ordered AS (
           SELECT i.id AS invoice_id, i.customer_id, i.paid_cents AS paid_before, i.number,
                  i.total_cents - i.paid_cents AS due, c.voucher, c.cash,
                  COALESCE(SUM(i.total_cents - i.paid_cents) OVER (
                      PARTITION BY i.customer_id
                      ORDER BY i.total_cents - i.paid_cents, i.issued_at, i.id
                      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
           FROM invoices i JOIN bulk_customers c ON c.customer_id = i.customer_id
           WHERE i.state = 'open' AND i.total_cents > i.paid_cents
       )
       SELECT invoice_id, customer_id, paid_before, number,
              LEAST(due, GREATEST(voucher - before, 0)) AS voucher_part,
              LEAST(due, GREATEST(voucher + cash - before, 0)) - LEAST(due, GREATEST(voucher - before, 0))
                  AS cash_part,
              due
       FROM ordered""",
    """DELETE FROM bulk_alloc WHERE voucher_part = 0 AND cash_part = 0""",
    """CREATE TEMP TABLE bulk_entries ON COMMIT DROP AS
       WITH parts AS (
           SELECT invoice_id, customer_id, paid_before, number, 'voucher' AS account, voucher_part AS amount
           FROM bulk_alloc WHERE voucher_part > 0
           UNION ALL
           SELECT invoice_id, customer_id, paid_before, number, 'cash', cash_part
           FROM bulk_alloc WHERE cash_part > 0
       ), inserted AS (
           INSERT INTO ledger_entries (customer_id, account, amount_cents, kind, reference, idempotency_key,
                                       note, created_at)
           SELECT customer_id, account, -amount, 'invoice_payment', 'invoice:' || invoice_id,
                  'invoice:' || invoice_id || ':' || account || ':after:' ||
                      (paid_before + CASE WHEN account = 'cash' THEN
                          (SELECT voucher_part FROM bulk_alloc b WHERE b.invoice_id = parts.invoice_id) ELSE 0 END),
                  'Invoice ' || number, :now
           FROM parts ORDER BY invoice_id, account DESC
           ON CONFLICT (idempotency_key) DO NOTHING
           RETURNING id, customer_id, account, amount_cents, reference
       )
       SELECT * FROM inserted""",
]
_BULK_APPLY_SQL = [
    """INSERT INTO invoice_payments (invoice_id, customer_id, source, amount_cents, ledger_entry_id, reference,
                                     created_at)
       SELECT CAST(substr(e.reference, 9) AS integer), e.customer_id, e.account, -e.amount_cents, e.id, a.number, :now
       FROM bulk_entries e JOIN bulk_alloc a ON a.invoice_id = CAST(substr(e.reference, 9) AS integer)
       ORDER BY e.id""",
    """UPDATE invoices i SET paid_cents = i.paid_cents + a.voucher_part + a.cash_part,
              state = CASE WHEN i.paid_cents + a.voucher_part + a.cash_part = i.total_cents THEN 'paid' ELSE i.state END,
              paid_at = CASE WHEN i.paid_cents + a.voucher_part + a.cash_part = i.total_cents THEN :now ELSE i.paid_at END
       FROM bulk_alloc a WHERE a.invoice_id = i.id""",
    """UPDATE users u SET voucher_balance_cents = u.voucher_balance_cents - s.voucher,
              cash_balance_cents = u.cash_balance_cents - s.cash
       FROM (SELECT customer_id, SUM(voucher_part) AS voucher, SUM(cash_part) AS cash
             FROM bulk_alloc GROUP BY customer_id) s
       WHERE s.customer_id = u.id""",
    # requests of customers left with nothing to pay are done (unless asked again meanwhile)
    """DELETE FROM settlement_requests r USING bulk_customers c
       WHERE r.customer_id = c.customer_id AND r.generation = c.generation
         AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.customer_id = c.customer_id
                         AND i.state = 'open' AND i.total_cents > i.paid_cents)""",
]


# one receipt per invoice this run paid in full (what the engine's apply_payment queues one by one)
_BULK_RECEIPTS_SQL = """
    SELECT i.customer_id, 'payment-receipt:' || i.id AS key, 'Receipt: invoice ' || i.number || ' is paid' AS subject,
           json_build_object('invoice_id', i.id) AS context, json_build_array('invoice_pdf', i.id) AS attachment
    FROM bulk_alloc a JOIN invoices i ON i.id = a.invoice_id
    WHERE i.state = 'paid' AND i.paid_cents = a.paid_before + a.voucher_part + a.cash_part"""


class BulkSettlementConflict(Exception):
    """A balance payment of the bulk path already existed: fall back to the per-customer engine."""


def settle_balances_bulk(session: Session, customer_ids: list[int]) -> list[int]:
    """PostgreSQL only: the voucher/cash part of settlement for many customers in one transaction of
    set-based statements — the same allocation (smallest due first, oldest on ties; voucher, then
    cash), the same deterministic ledger idempotency keys and the same locks (advisory lock per
    customer, then user and invoice rows FOR UPDATE) as `settle_customer`. Customers being settled
    elsewhere or with an unresolved card attempt are skipped. Commits.

    Returns the customers that still need the per-customer engine (something left to pay — cards —
    or skipped); the others' settlement requests are cleared."""
    if not customer_ids:
        return []
    params = {"ids": list(customer_ids), "lock_class": SETTLEMENT_LOCK_CLASS, "now": utcnow()}
    try:
        for statement in _BULK_SQL:
            session.execute(text(statement), params)
        expected = session.execute(text(
            "SELECT count(*) FILTER (WHERE voucher_part > 0) + count(*) FILTER (WHERE cash_part > 0) FROM bulk_alloc"
        )).scalar_one()
        written = session.execute(text("SELECT count(*) FROM bulk_entries")).scalar_one()
        if written != expected:
            raise BulkSettlementConflict(f"{expected - written} balance payment(s) already existed")
        for statement in _BULK_APPLY_SQL:
            session.execute(text(statement), params)
        notifications.queue_notifications_bulk(
            session, kind="payment_receipt", template="payment_receipt", source_sql=_BULK_RECEIPTS_SQL,
            params=params, now=params["now"],
        )
        recheck_deletion_marks(session, session.execute(text(
            "SELECT DISTINCT d.customer_id FROM deployments d JOIN bulk_alloc a ON a.customer_id = d.customer_id "
            "WHERE d.marked_for_deletion_at IS NOT NULL AND d.state NOT IN ('deleted', 'failed')"
        )).scalars())
        done = set(session.execute(text(
            "SELECT c.customer_id FROM bulk_customers c WHERE NOT EXISTS (SELECT 1 FROM settlement_requests r "
            "WHERE r.customer_id = c.customer_id) AND NOT EXISTS (SELECT 1 FROM invoices i WHERE "
            "i.customer_id = c.customer_id AND i.state = 'open' AND i.total_cents > i.paid_cents)"
        )).scalars())
        session.commit()
    except BulkSettlementConflict:
        session.rollback()
        log.warning("bulk settlement fell back to the per-customer engine", exc_info=True)
        return list(customer_ids)
    except Exception:
        session.rollback()
        raise
    return [c for c in customer_ids if c not in done]
