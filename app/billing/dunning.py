"""Dunning and grace (SPEC §10): weekly reminders, the deletion warning, deletion at the end of
the grace period, and the voucher-runway warning.

Guarantees, whatever the frequency or concurrency of `run_dunning`:
- An email is *reserved* in PostgreSQL before it is sent: a conditional update of the customer's
  `dunning_accounts.last_reminder_at` (only one transaction can move it within 7 days) plus a
  `dunning_notices` row unique on (customer, kind, window). The send job claims the row
  (`pending` → `sending`), sends, and marks it `sent`; an SMTP failure puts it back to `pending`
  with a later retry time, so it is retried, never lost and never sent twice in a week.
  (A crash between the SMTP server accepting and the `sent` commit can repeat that one email:
  the Message-ID is stable per notice so mail clients collapse it.)
- Deletion runs under a lock on the customer row: deployments are marked once, and the platform
  event is written in the same transaction (outbox), so it is told exactly once per newly marked
  set of deployments.
- Paying before the deadline cancels everything: every decision re-reads the unpaid invoices, and
  a reserved email whose invoices were paid in the meantime is cancelled instead of sent. Funds
  that just arrived (a pending settlement request) postpone reminders and deletion until the
  settlement ran.

"Now" is always a parameter captured when the decision is made (run time, reservation time), so
the time-travel tests and a worker in another process agree.
"""

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from flask import current_app
from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.billing import notifications, outbox
from app.billing.audit import record_audit
from app.billing.money import format_money, tax_cents
from app.models import Invoice, User
from app.models.base import utcnow
from app.models.dunning import DunningAccount, DunningNotice, PlatformWebhookDelivery
from app.models.usage import Deployment

log = logging.getLogger(__name__)

REMINDER_INTERVAL = timedelta(days=7)
# An invoice is reminded about once settlement had its chance (it runs right after issuing).
FIRST_REMINDER_DELAY = timedelta(hours=1)
# Funds that just arrived (a pending settlement request) may pay the debt: reminders wait this long
# for the settlement, deletion waits longer (a stuck settlement must not delete a paying customer).
REMINDER_SETTLEMENT_WAIT = timedelta(hours=1)
DELETION_SETTLEMENT_WAIT = timedelta(days=1)
RUNWAY_WARNING_INTERVAL = timedelta(days=7)
# Warn voucher-only customers whose funds run out before the period ends or within this horizon.
RUNWAY_HORIZON = timedelta(days=14)
# A reserved email not sent after this long is enqueued again by the next run (lost job, exhausted
# RQ retries, Redis down); a job holds its claim this long.
REQUEUE_AFTER = timedelta(minutes=10)
CLAIM_DURATION = timedelta(minutes=5)
# Delay before the n-th retry of a failed send (the last one repeats).
SEND_BACKOFF = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1),
                timedelta(hours=3))
DELETION_EVENT = "customer.deployments_marked_for_deletion"


class DunningError(Exception):
    """Base of dunning errors; `str(error)` is fit for the admin."""


class InvalidGraceExtension(DunningError):
    pass


# ------------------------------------------------------------------ reading ---
def _config_days(key: str) -> int:
    return int(current_app.config[key])


def grace_period() -> timedelta:
    return timedelta(days=_config_days("GRACE_PERIOD_DAYS"))


def deletion_warning_period() -> timedelta:
    return timedelta(days=_config_days("DELETION_WARNING_DAYS"))


def unpaid_invoices(session: Session, customer_id: int) -> list[Invoice]:
    """Issued invoices with an amount due, oldest first."""
    return list(
        session.scalars(
            select(Invoice)
            .where(Invoice.customer_id == customer_id, Invoice.state == "open",
                   Invoice.total_cents > Invoice.paid_cents)
            .order_by(Invoice.issued_at, Invoice.id)
        )
    )


def _issued(invoice: Invoice) -> datetime:
    return invoice.issued_at or invoice.created_at


def deletion_due_at(session: Session, customer_id: int, invoices: list[Invoice] | None = None) -> datetime | None:
    """When the customer's deployments get marked for deletion if nothing is paid: the oldest
    unpaid invoice's issue time + GRACE_PERIOD_DAYS, or later when an admin extended the grace."""
    invoices = unpaid_invoices(session, customer_id) if invoices is None else invoices
    if not invoices:
        return None
    account = session.get(DunningAccount, customer_id)
    return deletion_due_from(_issued(invoices[0]), account.grace_extended_until if account else None)


def deletion_due_from(oldest_unpaid_issued_at: datetime | None, grace_extended_until: datetime | None) -> datetime | None:
    """The rule of `deletion_due_at` from its two inputs (for read models that load them in one query)."""
    if oldest_unpaid_issued_at is None:
        return None
    due = oldest_unpaid_issued_at + grace_period()
    if grace_extended_until is not None and grace_extended_until > due:
        due = grace_extended_until
    return due


def is_overdue(invoice: Invoice, now: datetime) -> bool:
    """Unpaid after its due date (issue + PAYMENT_TERMS_DAYS, fixed at issue)."""
    return invoice.due_at is not None and invoice.due_at <= now and invoice.amount_due_cents > 0


def settlement_pending(session: Session, customer_id: int, now: datetime, wait: timedelta) -> bool:
    """True while a settlement requested less than `wait` ago has not run yet."""
    from app.models import SettlementRequest

    requested_at = session.scalar(
        select(SettlementRequest.requested_at).where(SettlementRequest.customer_id == customer_id)
    )
    return requested_at is not None and requested_at > now - wait


def _tax_rate(country: str | None, vat_id: str | None = None) -> Decimal:
    from app.billing.tax import tax_treatment

    return Decimal(tax_treatment(country, vat_id).rate)


def _unbilled_usage_cents(session: Session, customer_id: int, now: datetime) -> int:
    """Usage up to now not invoiced yet, less time after now that is already invoiced (negative when
    an old invoice billed ahead: that time is paid for, so it adds to what is available)."""
    from app.billing.usage import invoiced_ahead_cents, unbilled_usage

    unbilled = sum(line.amount_cents for line in unbilled_usage(session, customer_id, now))
    return unbilled - invoiced_ahead_cents(session, customer_id, now)


def _month_end(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year + (moment.month == 12), moment.month % 12 + 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Runway:
    """How long a customer without a usable card can keep their deployments running."""

    hourly_burn_cents: Decimal  # incl. tax, exact
    available_cents: int  # balances minus usage not invoiced yet and minus debt
    runs_out_at: datetime
    deletion_at: datetime


def voucher_runway(session: Session, customer_id: int, now: datetime | None = None) -> Runway | None:
    """For a customer with active deployments and no usable card: when their balance (vouchers,
    plus any cash) runs out at the current burn, and when deletion would follow (the invoice for
    that month is issued on the 1st of the next month; deletion comes GRACE_PERIOD_DAYS later, or
    earlier if an unpaid invoice already sets the date). None when a card pays or nothing runs."""
    from app.billing.cards import usable_cards
    from app.billing.usage import hourly_cost_cents_of_active_deployments

    now = now or utcnow()
    customer = session.get(User, customer_id)
    if customer is None or customer.is_admin or usable_cards(session, customer_id, now):
        return None
    burn = Decimal(hourly_cost_cents_of_active_deployments(session, customer_id))
    if burn <= 0:
        return None
    invoices = unpaid_invoices(session, customer_id)
    return runway_from(
        hourly_cost_cents=burn,
        tax_rate=_tax_rate(customer.country, customer.vat_id),
        balance_cents=customer.voucher_balance_cents + customer.cash_balance_cents,
        unbilled_cents=_unbilled_usage_cents(session, customer_id, now),
        debt_cents=sum(inv.amount_due_cents for inv in invoices),
        deletion_due=deletion_due_at(session, customer_id, invoices),
        now=now,
    )


def runway_from(*, hourly_cost_cents: Decimal, tax_rate: Decimal, balance_cents: int, unbilled_cents: int,
                debt_cents: int, deletion_due: datetime | None, now: datetime) -> Runway | None:
    """The runway rule, from its inputs: what is left of cash + voucher once the usage not invoiced
    yet (with its tax, rounded like the invoice rounds it) and the open debt are paid, spent at the
    current hourly cost (exact, tax included); the run-out time is rounded down to the second. The
    deletion that would follow without a card: grace after the invoice of the month the money runs
    out (issued on the 1st of the next month), or the date an unpaid invoice already sets if earlier.
    None when nothing costs money."""
    if hourly_cost_cents <= 0:
        return None
    burn = Decimal(hourly_cost_cents) * (1 + Decimal(tax_rate))
    available = balance_cents - unbilled_cents - tax_cents(unbilled_cents, tax_rate) - debt_cents
    hours = max(Decimal(available), Decimal(0)) / burn
    runs_out_at = now + timedelta(seconds=int(hours * 3600))
    deletion_at = _month_end(runs_out_at) + grace_period()
    if deletion_due is not None and deletion_due < deletion_at:
        deletion_at = deletion_due
    return Runway(burn, available, runs_out_at, deletion_at)


def runway_is_short(runway: Runway, now: datetime) -> bool:
    return runway.runs_out_at < max(_month_end(now), now + RUNWAY_HORIZON)


@dataclass(frozen=True)
class DunningSummary:
    """What the customer's dashboard panel shows."""

    debt_cents: int
    unpaid_count: int
    oldest_unpaid: Invoice | None
    # the oldest unpaid invoice past its due date; deletion is only announced once there is one
    oldest_overdue: Invoice | None
    deletion_at: datetime | None
    deletion_warning: bool  # inside the warning period
    marked_for_deletion: int  # deployments already marked
    runway: Runway | None

    @property
    def needs_attention(self) -> bool:
        return bool(self.debt_cents or self.marked_for_deletion or self.runway)


def dunning_summary(session: Session, customer_id: int, now: datetime | None = None) -> DunningSummary:
    now = now or utcnow()
    invoices = unpaid_invoices(session, customer_id)
    account = session.get(DunningAccount, customer_id) if invoices else None
    marked = session.scalar(
        select(func.count(Deployment.id)).where(
            Deployment.customer_id == customer_id, Deployment.marked_for_deletion_at.is_not(None),
            Deployment.state.notin_(("deleted", "failed")),
        )
    ) or 0
    return summary_from(
        unpaid=invoices, grace_extended_until=account.grace_extended_until if account else None,
        marked_for_deletion=int(marked), runway=voucher_runway(session, customer_id, now), now=now,
    )


def summary_from(*, unpaid: list[Invoice], grace_extended_until: datetime | None, marked_for_deletion: int,
                 runway: Runway | None, now: datetime) -> DunningSummary:
    """The rule of `dunning_summary` from its inputs (for read models that load them in one query):
    `unpaid` as `unpaid_invoices` returns them (oldest first), `runway` as `voucher_runway` does."""
    deletion_at = deletion_due_from(_issued(unpaid[0]), grace_extended_until) if unpaid else None
    if runway is not None and not runway_is_short(runway, now):
        runway = None
    overdue = [inv for inv in unpaid if is_overdue(inv, now)]
    return DunningSummary(
        debt_cents=sum(inv.amount_due_cents for inv in unpaid),
        unpaid_count=len(unpaid),
        oldest_unpaid=unpaid[0] if unpaid else None,
        oldest_overdue=overdue[0] if overdue else None,
        deletion_at=deletion_at,
        deletion_warning=deletion_at is not None and now >= deletion_at - deletion_warning_period(),
        marked_for_deletion=marked_for_deletion,
        runway=runway,
    )


def runway_tax_rate(country: str | None, vat_id: str | None) -> Decimal:
    """The tax rate the voucher runway burns at (the buyer's treatment, reverse charge included)."""
    return _tax_rate(country, vat_id)


@dataclass(frozen=True)
class DunningHistory:
    """What the admin customer page shows."""

    notices: list[DunningNotice]
    deliveries: list[PlatformWebhookDelivery]
    account: DunningAccount | None
    summary: DunningSummary


def dunning_history(session: Session, customer_id: int, now: datetime | None = None) -> DunningHistory:
    notices = list(session.scalars(
        select(DunningNotice).where(DunningNotice.customer_id == customer_id)
        .order_by(DunningNotice.reserved_at.desc(), DunningNotice.id.desc()).limit(100)
    ))
    deliveries = list(session.scalars(
        select(PlatformWebhookDelivery).where(PlatformWebhookDelivery.customer_id == customer_id)
        .order_by(PlatformWebhookDelivery.id.desc()).limit(50)
    ))
    return DunningHistory(notices, deliveries, session.get(DunningAccount, customer_id),
                          dunning_summary(session, customer_id, now))


# --------------------------------------------------------------- reserving ---
def _ensure_account(session: Session, customer_id: int, now: datetime) -> None:
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(DunningAccount)
        .values(customer_id=customer_id, updated_at=now)
        .on_conflict_do_nothing(index_elements=["customer_id"])
    )


def _reserve_slot(session: Session, customer_id: int, column, interval: timedelta, now: datetime) -> bool:
    """Atomically move `column` to `now` unless it was moved less than `interval` ago. Under
    concurrency exactly one transaction wins (the others block on the row, then see the new value)."""
    _ensure_account(session, customer_id, now)
    result = session.execute(
        update(DunningAccount)
        .where(DunningAccount.customer_id == customer_id, or_(column.is_(None), column <= now - interval))
        .values({column.key: now, "updated_at": now})
    )
    return result.rowcount == 1


def _add_notice(session: Session, customer: User, kind: str, window_key: str, now: datetime,
                invoice_ids: list[int] | None, details: dict) -> DunningNotice | None:
    """Insert the reservation row in a savepoint; None when this window is already reserved."""
    notice = DunningNotice(
        customer_id=customer.id, kind=kind, window_key=window_key, status="pending", to_email=customer.email,
        invoice_ids=invoice_ids, details=details, reserved_at=now, next_attempt_at=now + REQUEUE_AFTER,
        attempts=0,
    )
    try:
        with session.begin_nested():
            session.add(notice)
            session.flush()
    except IntegrityError:
        return None
    return notice


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


def reserve_reminder(session: Session, customer: User, now: datetime) -> DunningNotice | None:
    """Reserve this week's reminder listing every unpaid invoice (none if one went out in the last
    7 days or nothing is old enough). Does not commit."""
    invoices = [inv for inv in unpaid_invoices(session, customer.id) if _issued(inv) <= now - FIRST_REMINDER_DELAY]
    if not invoices or settlement_pending(session, customer.id, now, REMINDER_SETTLEMENT_WAIT):
        return None
    if not _reserve_slot(session, customer.id, DunningAccount.last_reminder_at, REMINDER_INTERVAL, now):
        return None
    details = {"debt_cents": sum(inv.amount_due_cents for inv in invoices),
               "deletion_at": _iso(deletion_due_at(session, customer.id))}
    return _add_notice(session, customer, "reminder", now.astimezone(UTC).strftime("%Y-%m-%d"), now,
                       [inv.id for inv in invoices], details)


def reserve_deletion_warning(session: Session, customer: User, now: datetime) -> DunningNotice | None:
    """Reserve the warning once per deletion date, inside DELETION_WARNING_DAYS before it."""
    invoices = unpaid_invoices(session, customer.id)
    due = deletion_due_at(session, customer.id, invoices)
    if due is None or not (due - deletion_warning_period() <= now < due):
        return None
    window_key = f"{invoices[0].id}:{due.astimezone(UTC):%Y-%m-%dT%H:%M}"
    details = {"deletion_at": _iso(due), "debt_cents": sum(inv.amount_due_cents for inv in invoices)}
    return _add_notice(session, customer, "deletion_warning", window_key, now, [inv.id for inv in invoices], details)


def reserve_runway_warning(session: Session, customer: User, now: datetime) -> DunningNotice | None:
    """Reserve a runway warning at most weekly (sooner only if the run-out date moved earlier)."""
    runway = voucher_runway(session, customer.id, now)
    if runway is None or not runway_is_short(runway, now):
        return None
    runs_out_day = runway.runs_out_at.astimezone(UTC).strftime("%Y-%m-%d")
    last = session.scalar(
        select(DunningNotice).where(DunningNotice.customer_id == customer.id, DunningNotice.kind == "runway_warning")
        .order_by(DunningNotice.reserved_at.desc()).limit(1)
    )
    earlier = last is not None and runs_out_day < (last.details or {}).get("runs_out_on", "")
    if not earlier and not _reserve_slot(
        session, customer.id, DunningAccount.last_runway_warning_at, RUNWAY_WARNING_INTERVAL, now
    ):
        return None
    details = {
        "runs_out_at": _iso(runway.runs_out_at),
        "runs_out_on": runs_out_day,
        "deletion_at": _iso(runway.deletion_at),
        "available_cents": runway.available_cents,
        "hourly_burn_cents": str(runway.hourly_burn_cents),
    }
    return _add_notice(session, customer, "runway_warning", runs_out_day, now, None, details)


# ---------------------------------------------------------------- deletion ---
def enforce_grace(session: Session, customer_id: int, now: datetime) -> list[int]:
    """At or after the deletion date with the debt still unpaid: mark the customer's deployments
    for deletion and queue the platform event, in the caller's transaction, under a lock on the
    customer row. Returns the ids newly marked (empty when nothing is due or all were marked)."""
    from app.billing.usage import mark_customer_deployments_for_deletion
    from app.platform_notify import record_platform_event

    session.scalar(select(User.id).where(User.id == customer_id).with_for_update())
    invoices = unpaid_invoices(session, customer_id)
    due = deletion_due_at(session, customer_id, invoices)
    if due is None or now < due or settlement_pending(session, customer_id, now, DELETION_SETTLEMENT_WAIT):
        return []
    already = set(session.scalars(
        select(Deployment.id).where(Deployment.customer_id == customer_id,
                                    Deployment.marked_for_deletion_at.is_not(None))
    ))
    reason = (f"Unpaid invoice {invoices[0].number or invoices[0].id} past the grace period "
              f"({format_money(sum(inv.amount_due_cents for inv in invoices))} due)")
    marked = mark_customer_deployments_for_deletion(session, customer_id, reason)
    new_ids = [dep_id for dep_id in marked if dep_id not in already]
    _ensure_account(session, customer_id, now)
    account = session.get(DunningAccount, customer_id)
    if account.deletion_requested_at is None:
        account.deletion_requested_at = now
    if new_ids:
        deployments = list(session.scalars(
            select(Deployment).where(Deployment.id.in_(new_ids)).order_by(Deployment.id)
        ))
        notifications.announce_deployments_marked(session, customer_id, deployments, reason=reason, now=now)
        record_platform_event(session, customer_id, DELETION_EVENT, {
            "customer_id": customer_id,
            "reason": reason,
            "grace_ended_at": _iso(due),
            "unpaid_invoices": [inv.number for inv in invoices],
            "deployments": [{"id": d.id, "external_id": d.external_id, "name": d.name} for d in deployments],
        }, now=now)
    return new_ids


# --------------------------------------------------------------- the run ---
@dataclass
class DunningRun:
    notice_ids: list[int] = field(default_factory=list)
    delivery_ids: list[int] = field(default_factory=list)
    marked_deployment_ids: list[int] = field(default_factory=list)
    failed_customers: list[int] = field(default_factory=list)


def customers_to_consider(session: Session) -> list[int]:
    debtors = select(Invoice.customer_id).where(Invoice.state == "open", Invoice.total_cents > Invoice.paid_cents)
    running = select(Deployment.customer_id).where(Deployment.state.in_(("in_progress", "running")))
    return sorted(set(session.scalars(debtors)) | set(session.scalars(running)))


def dunning_for_customer(session: Session, customer_id: int, now: datetime, run: DunningRun) -> None:
    """One customer's unit of work: deletion, then the emails. Commits."""
    customer = session.get(User, customer_id)
    if customer is None or customer.is_admin:
        return
    from app.billing.recovery import lift_deletion_marks_if_settled

    lift_deletion_marks_if_settled(session, customer_id, now)
    new_ids = enforce_grace(session, customer_id, now)
    session.commit()
    run.marked_deployment_ids += new_ids
    for reserve in (reserve_deletion_warning, reserve_reminder, reserve_runway_warning):
        notice = reserve(session, customer, now)
        session.commit()
        if notice is not None:
            run.notice_ids.append(notice.id)


def run_dunning(session: Session, now: datetime | None = None) -> DunningRun:
    """Everything dunning does, for every customer; safe at any frequency and concurrently.
    Returns what the caller must enqueue: new notices, due retries, platform deliveries."""
    from app.platform_notify import due_deliveries

    now = now or utcnow()
    run = DunningRun()
    for customer_id in customers_to_consider(session):
        try:
            dunning_for_customer(session, customer_id, now, run)
        except Exception:
            session.rollback()
            log.exception("dunning failed for customer %s", customer_id)
            run.failed_customers.append(customer_id)
    run.notice_ids += due_notices(session, now)
    run.delivery_ids = due_deliveries(session, now, REQUEUE_AFTER)
    return run


def due_notices(session: Session, now: datetime) -> list[int]:
    """Reserved emails that should have gone out by now (lost job, failed send whose retry time
    came, expired claim), see app.billing.outbox.due_ids. Commits."""
    return outbox.due_ids(session, DunningNotice, now, REQUEUE_AFTER)


# ----------------------------------------------------------------- sending ---
def claim_notice(session: Session, notice_id: int, now: datetime) -> DunningNotice | None:
    """Take the right to send one notice (pending, or a claim that expired). Commits."""
    return outbox.claim(session, DunningNotice, notice_id, now, CLAIM_DURATION)


def still_relevant_invoices(session: Session, notice: DunningNotice) -> list[Invoice]:
    """The notice's invoices that are still unpaid (a payment since the reservation cancels them)."""
    ids = notice.invoice_ids or []
    if not ids:
        return []
    return list(session.scalars(
        select(Invoice).where(Invoice.id.in_(ids), Invoice.customer_id == notice.customer_id,
                              Invoice.state == "open", Invoice.total_cents > Invoice.paid_cents)
        .order_by(Invoice.issued_at, Invoice.id)
    ))


def notice_is_obsolete(session: Session, notice: DunningNotice, invoices: list[Invoice], now: datetime) -> bool:
    if notice.kind in ("reminder", "deletion_warning"):
        if not invoices:
            return True
        if notice.kind == "deletion_warning":
            due = deletion_due_at(session, notice.customer_id)
            return due is None or _iso(due) != (notice.details or {}).get("deletion_at")
    if notice.kind == "runway_warning":
        # Still useful unless a card was added since; a stale date is better than silence.
        from app.billing.cards import usable_cards

        return bool(usable_cards(session, notice.customer_id, now))
    return False


def mark_sent(session: Session, notice_id: int, now: datetime) -> None:
    outbox.finish(session, DunningNotice, notice_id, "sent", sent_at=now, last_error=None)


def mark_cancelled(session: Session, notice_id: int, now: datetime) -> None:
    outbox.finish(session, DunningNotice, notice_id, "cancelled", count_attempt=False, cancelled_at=now)


def mark_failed(session: Session, notice_id: int, now: datetime, error: str) -> None:
    """Back to pending with a later retry time: the periodic run re-enqueues it if RQ does not."""
    outbox.release_after_failure(session, DunningNotice, notice_id, now, error, SEND_BACKOFF)


# ------------------------------------------------------------ admin actions ---
def extend_grace(session: Session, actor_id: int, customer_id: int, days: int, now: datetime | None = None) -> datetime:
    """Push the customer's deletion date `days` later (from the current date, or from now when there
    is no debt yet). Audit-logged. Commits. Marks that the new date no longer justifies are lifted
    (app.billing.recovery)."""
    now = now or utcnow()
    if not 1 <= days <= 366:
        raise InvalidGraceExtension("Extend the grace by 1 to 366 days.")
    customer = session.scalar(select(User).where(User.id == customer_id).with_for_update())
    if customer is None or customer.is_admin:
        session.rollback()
        raise InvalidGraceExtension("No such customer.")
    _ensure_account(session, customer_id, now)
    account = session.get(DunningAccount, customer_id)
    before_due = deletion_due_at(session, customer_id)
    base = max(before_due or now, now)
    previous = account.grace_extended_until
    account.grace_extended_until = base + timedelta(days=days)
    account.updated_at = now
    record_audit(session, actor_id, "dunning.extend_grace", "customer", customer_id,
                 before={"deletion_at": _iso(before_due), "grace_extended_until": _iso(previous)},
                 after={"deletion_at": _iso(account.grace_extended_until), "days": days,
                        "grace_extended_until": _iso(account.grace_extended_until)})
    from app.billing.recovery import lift_deletion_marks_if_settled

    lift_deletion_marks_if_settled(session, customer_id, now, cause="grace_extended")
    notifications.announce_grace_extended(session, customer_id, account.grace_extended_until, days)
    session.commit()
    return account.grace_extended_until


# ---------------------------------------------------------------- composing ---
INVOICE_ENDPOINTS = ("customer.invoice", "customer.invoice_detail", "customer.show_invoice")


def invoice_link(invoice: Invoice) -> str:
    from app.mail import first_external_url

    return first_external_url(INVOICE_ENDPOINTS, f"/invoices/{invoice.id}", invoice_id=invoice.id)


def _parse(moment: str | None) -> datetime | None:
    return datetime.fromisoformat(moment) if moment else None


def compose_notice(session: Session, notice: DunningNotice, invoices: list[Invoice]):
    """The email for a reserved notice: reminders and deletion warnings list what is due with a link
    to pay each invoice and its PDF attached. Needs an app context."""
    from app.mail import build_message, first_external_url

    customer = session.get(User, notice.customer_id)
    details = notice.details or {}
    debt = sum(inv.amount_due_cents for inv in invoices)
    context = {
        "customer": customer,
        "invoices": [{"number": inv.number or str(inv.id), "issued_at": _issued(inv), "total": format_money(inv.total_cents),
                      "due": format_money(inv.amount_due_cents), "due_date": inv.due_at,
                      "overdue": is_overdue(inv, notice.reserved_at), "link": invoice_link(inv)} for inv in invoices],
        "any_overdue": any(is_overdue(inv, notice.reserved_at) for inv in invoices),
        "debt": format_money(debt),
        "deletion_at": _parse(details.get("deletion_at")),
        "runs_out_at": _parse(details.get("runs_out_at")),
        "as_of": notice.reserved_at,
        "available": format_money(max(int(details.get("available_cents") or 0), 0)),
        "dashboard_link": first_external_url(("customer.dashboard",), "/dashboard"),
        "invoices_link": first_external_url(("customer.invoices",), "/invoices"),
        "balance_link": first_external_url(("customer.balance",), "/balance"),
        "cards_link": first_external_url(("customer.cards",), "/cards"),
    }
    attachments = []
    if notice.kind in ("reminder", "deletion_warning"):
        from app.pdf import render_invoice_pdf

        attachments = [(f"invoice-{inv.number or inv.id}.pdf", "application/pdf", render_invoice_pdf(inv))
                       for inv in invoices]
    if notice.kind == "reminder":
        subject = f"Payment reminder: {context['debt']} due on your Paydesk account"
    elif notice.kind == "deletion_warning":
        subject = f"Your deployments will be deleted on {context['deletion_at']:%Y-%m-%d} unless you pay"
    else:
        subject = f"Your balance runs out on {context['runs_out_at']:%Y-%m-%d}"
    return build_message(notice.to_email, subject, f"dunning_{notice.kind}", attachments=attachments,
                         message_id=f"<dunning-{notice.id}@paydesk.local>", **context)
