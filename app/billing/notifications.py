"""Customer notifications (issue 12, SPEC §15): every movement of a customer's money is announced.

`queue_notification` writes one `notifications` row in the caller's transaction (an outbox): it
commits or rolls back with the event that caused it. The row's `key` is unique, so the same event
queued twice (a retried job, a webhook and a redirect racing) yields one notification; the call
returns False for the second. After the transaction commits, a hook that `jobs` registers enqueues
the send job; if Redis is down or the job is lost, the periodic sweep (`jobs.notifications`) sends
what is still pending. The send claims the row (`app.billing.outbox`: pending → sending → sent), so
a job that runs twice sends once.

What is sent is rendered at send time: `templates/email/<template>.txt` and `.html` with the stored
`context` (plain JSON values) plus what the kind's enricher reads from the database (the invoice,
its payments, the card attempts), and the attachment named by `attachment`, e.g.
`("invoice_pdf", invoice_id)`; other features register theirs with `register_attachment`.

Preferences: kinds of the "receipt" category are skipped (recorded as `skipped`) for a customer who
turned receipts off; failures, deletions and security notices always go out.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import Integer, String, bindparam, event, select, text
from sqlalchemy.orm import Session

from app.billing import outbox, settlement_requests
from app.billing.card_attempts import REFUSED_STATES, card_label, invoice_attempts, payment_source_label
from app.models import Card, ChargeAttempt, Invoice, User
from app.models.base import UTCDateTime, utcnow
from app.models.notification import Notification

# kind → category. Receipts may be turned off by the customer; every other category always goes out.
KINDS: dict[str, str] = {
    "invoice_issued": "billing",
    "payment_receipt": "receipt",
    "topup_receipt": "receipt",
    "payment_failed": "failure",
    "card_added": "security",
    "card_removed": "security",
    "card_default_changed": "security",
    "password_changed": "security",
    "signup_attempt": "security",
    "deployments_marked_for_deletion": "deletion",
    "deployments_deleted": "deletion",
    "deletion_lifted": "billing",
    "grace_extended": "billing",
    "credit_note_issued": "billing",
    "spending_alert": "alert",
    "price_change": "notice",
}
OPTIONAL_CATEGORIES = frozenset({"receipt"})
_PENDING_KEY = "paydesk_pending_notifications"
# The job enqueued after commit normally sends at once; the sweep only takes rows older than this.
REQUEUE_AFTER = timedelta(minutes=2)
CLAIM_DURATION = timedelta(minutes=5)
SEND_BACKOFF = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1),
                timedelta(hours=3))


class UnknownNotificationKind(ValueError):
    pass


def is_optional(kind: str) -> bool:
    return KINDS.get(kind) in OPTIONAL_CATEGORIES


def message_id_for(key: str) -> str:
    """A Message-ID derived from the key: a resend of the same notification is recognisably the same."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:40]
    return f"<n-{digest}@paydesk.local>"


# ----------------------------------------------------------------- queueing ---
# Built once (every money movement queues one); the receipts preference is read by the same
# statement. The LEFT JOIN keeps an unknown customer a foreign-key error, as a plain INSERT would.
# PostgreSQL and SQLite share the syntax (`WHERE true` lets SQLite parse INSERT … SELECT … ON CONFLICT).
_QUEUE = (
    text(
        "INSERT INTO notifications (customer_id, kind, key, subject, template, context, attachment, status, "
        "message_id, created_at, next_attempt_at, attempts, skipped_at) "
        "SELECT :user_id, :kind, :key, :subject, :template, :context, :attachment, "
        "CASE WHEN :optional AND NOT coalesce(u.email_receipts, false) THEN 'skipped' ELSE 'pending' END, "
        ":message_id, :now, :next_attempt_at, 0, "
        "CASE WHEN :optional AND NOT coalesce(u.email_receipts, false) THEN :now END "
        "FROM (SELECT 1 AS one) one LEFT JOIN users u ON u.id = :user_id WHERE true "
        "ON CONFLICT (key) DO NOTHING RETURNING id, status"
    )
    .bindparams(
        bindparam("context", type_=Notification.__table__.c.context.type),
        bindparam("attachment", type_=Notification.__table__.c.attachment.type),
        bindparam("now", type_=UTCDateTime()),
        bindparam("next_attempt_at", type_=UTCDateTime()),
    )
    .columns(id=Integer(), status=String())
)


def queue_notification(session: Session, *, user_id: int, kind: str, key: str, subject: str, template: str,
                       context: dict, attachment: tuple[str, int | str] | None = None) -> bool:
    """Record one notification in the caller's transaction (does not commit). Returns False when a
    notification with this `key` already exists (nothing is written). Sent once, after commit."""
    if kind not in KINDS:
        raise UnknownNotificationKind(kind)
    if attachment is not None and attachment[0] not in ATTACHMENTS:
        raise ValueError(f"no attachment renderer {attachment[0]!r}")
    if not key or len(key) > 200:
        raise ValueError("a notification key is 1 to 200 characters")
    plain_context = json.loads(json.dumps(context))  # plain JSON values only (TypeError otherwise)
    now = utcnow()
    if session.autoflush:
        session.flush()  # a textual statement does not autoflush; the customer row may be pending
    row = session.execute(_QUEUE, {
        "user_id": user_id, "kind": kind, "key": key, "subject": subject[:300], "template": template,
        "context": plain_context, "attachment": list(attachment) if attachment else None,
        "optional": is_optional(kind), "message_id": message_id_for(key), "now": now,
        "next_attempt_at": now + REQUEUE_AFTER,
    }).first()
    row_id, skipped = (row.id, row.status == "skipped") if row is not None else (None, False)
    if row_id is None:
        return False
    if not skipped:
        note_pending(session, [row_id])
    return True


def bulk_insert_sql(kind: str, template: str, source_sql: str, *, order_by_key: bool = True,
                    customers_known: bool = False) -> str:
    """The INSERT … SELECT of set-based `queue_notification` (PostgreSQL), `… RETURNING id, status`, for
    `queue_notifications_bulk` or as a data-modifying CTE of a larger statement: `source_sql` is a
    SELECT yielding `customer_id, key, subject, context (json), attachment (json or NULL)`. Same rules
    as one notification: unique keys (existing ones are left alone), receipts skipped for customers
    who turned them off, the Message-ID derived from the key. Bind `bulk_insert_params` with it.
    `order_by_key` inserts in key order (index locality) when the source's order is not already that.
    Rows of a customer that does not exist are dropped, unless `customers_known` (every customer of the
    source is a user row the caller's statement read, and users are never deleted): then a kind that
    reads no preference does not join users."""
    if kind not in KINDS:
        raise UnknownNotificationKind(kind)
    wanted = "u.email_receipts" if is_optional(kind) else "true"
    users_join = "" if customers_known and not is_optional(kind) else "JOIN users u ON u.id = s.customer_id"
    return f"""
        INSERT INTO notifications (customer_id, kind, key, subject, template, context, attachment, status,
                                   message_id, created_at, next_attempt_at, attempts, skipped_at)
        SELECT s.customer_id, :n_kind, s.key, left(s.subject, 300), :n_template, s.context, s.attachment,
               CASE WHEN {wanted} THEN 'pending' ELSE 'skipped' END,
               '<n-' || left(encode(sha256(convert_to(s.key, 'UTF8')), 'hex'), 40) || '@paydesk.local>',
               :n_now, :n_next, 0, CASE WHEN {wanted} THEN NULL ELSE :n_now END
        FROM ({source_sql}) s {users_join}
        {"ORDER BY s.key" if order_by_key else ""}
        ON CONFLICT (key) DO NOTHING
        RETURNING id, status"""


def bulk_insert_params(kind: str, template: str, now: datetime) -> dict:
    return {"n_kind": kind, "n_template": template, "n_now": now, "n_next": now + REQUEUE_AFTER}


def queue_notifications_bulk(session: Session, *, kind: str, template: str, source_sql: str, params: dict,
                             now: datetime | None = None) -> int:
    """Set-based `queue_notification` for bulk paths (PostgreSQL): `source_sql` as for
    `bulk_insert_sql`, run with `params`. Does not commit; returns how many were queued."""
    now = now or utcnow()
    statement = text(bulk_insert_sql(kind, template, source_sql)).bindparams(
        bindparam("n_now", type_=UTCDateTime()), bindparam("n_next", type_=UTCDateTime()))
    rows = session.execute(statement, {**params, **bulk_insert_params(kind, template, now)}).all()
    note_pending(session, [row.id for row in rows if row.status == "pending"])
    return len(rows)


def note_pending(session: Session, notification_ids) -> None:
    """Ask for these rows to be sent once the session commits (set-based writers call this)."""
    session.info.setdefault(_PENDING_KEY, set()).update(notification_ids)


_sender: Callable[[list[int]], object] | None = None


def register_notification_sender(sender: Callable[[list[int]], object]) -> None:
    """`jobs` registers how committed notifications reach a worker (billing never imports jobs);
    without one, they wait for the periodic sweep."""
    global _sender
    _sender = sender


# Run before the other after-commit hooks (insert=True): when the registered sender says it also
# enqueues settlement jobs the way the registered settlement enqueuer does (`sender.batches_with` is
# that enqueuer and `sender.with_settlements(ids, customers)` sends both), the settlement jobs this
# commit asks for are handed to it too, so the two reach the queue together (one Redis round trip);
# settlement_requests' own hook then finds nothing left. Otherwise each hook enqueues its own.
@event.listens_for(Session, "after_commit", insert=True)
def _send_after_commit(session: Session) -> None:
    ids = sorted(session.info.pop(_PENDING_KEY, ()))
    if not ids or _sender is None:
        return
    enqueuer = settlement_requests.settlement_enqueuer()
    if enqueuer is not None and getattr(_sender, "batches_with", None) is enqueuer:
        customers = settlement_requests.pop_pending_enqueues(session)
        if customers:
            _sender.with_settlements(ids, customers)
            return
    _sender(ids)


@event.listens_for(Session, "after_rollback")
def _forget_on_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


def receipts_enabled(session: Session, user_id: int) -> bool:
    return bool(session.scalar(select(User.email_receipts).where(User.id == user_id)))


def set_receipts_enabled(session: Session, user_id: int, enabled: bool) -> None:
    """The customer's choice about receipts (payment and top-up receipts). Commits."""
    user = session.get(User, user_id)
    if user is None:
        raise LookupError(user_id)
    user.email_receipts = bool(enabled)
    session.commit()


# -------------------------------------------------------------- attachments ---
Attachment = tuple[str, str, bytes]  # (filename, mimetype, data)
ATTACHMENTS: dict[str, Callable[[Session, int, int], Attachment | None]] = {}


def register_attachment(name: str, render: Callable[[Session, int, int], Attachment | None]) -> None:
    """`render(session, customer_id, ref)` returns the attachment, or None when `ref` is not the
    customer's (never attach someone else's document)."""
    ATTACHMENTS[name] = render


def _invoice_pdf(session: Session, customer_id: int, invoice_id: int) -> Attachment | None:
    from app.pdf import render_invoice_pdf

    invoice = session.get(Invoice, int(invoice_id))
    if invoice is None or invoice.customer_id != customer_id or invoice.state == "draft":
        return None
    return f"invoice-{invoice.number or invoice.id}.pdf", "application/pdf", render_invoice_pdf(invoice)


register_attachment("invoice_pdf", _invoice_pdf)


# ------------------------------------------------------------ what is shown ---
def invoice_due_date(invoice: Invoice) -> datetime | None:
    """When the invoice is due: its own due date when it has one, else issue date + payment terms."""
    due = getattr(invoice, "due_at", None)
    if due is not None:
        return due
    if invoice.issued_at is None:
        return None
    return invoice.issued_at + timedelta(days=int(current_app.config.get("PAYMENT_TERMS_DAYS", 14)))


@dataclass(frozen=True)
class PlanPart:
    amount_cents: int
    source: str  # "your balance", "Visa ending 4242"
    done: bool  # already paid (True) or what settlement will take (False)

    @property
    def phrase(self) -> str:
        """"$5.00 from your balance", "$7.50 to Visa ending 4242", "$5.00 paid with Visa ending 4242"."""
        from app.billing.money import format_money

        amount = format_money(self.amount_cents)
        if self.done:
            return f"{amount} paid {'from' if self.source == 'your balance' else 'with'} {self.source}"
        return f"{amount} {'from' if self.source == 'your balance' else 'to'} {self.source}"


def payment_plan(session: Session, invoice: Invoice) -> tuple[list[PlanPart], int]:
    """How the invoice is (or will be) paid: what was paid per source, then for what is still due,
    the part the balances cover and the part the default card will be charged. Returns (parts,
    cents left with no way to pay yet)."""
    from app.billing.cards import usable_cards

    parts: dict[str, int] = {}
    for payment in invoice.payments:
        label = payment_source_label(session, payment)
        label = "your balance" if payment.source in ("voucher", "cash") else label
        parts[label] = parts.get(label, 0) + payment.amount_cents
    plan = [PlanPart(cents, label, True) for label, cents in parts.items()]
    due = invoice.amount_due_cents if invoice.state in ("open", "uncollectible") else 0
    if due <= 0:
        return plan, 0
    customer = session.get(User, invoice.customer_id)
    from_balance = min(customer.voucher_balance_cents + customer.cash_balance_cents, due)
    if from_balance > 0:
        plan.append(PlanPart(from_balance, "your balance", False))
    rest = due - from_balance
    cards = usable_cards(session, invoice.customer_id) if rest > 0 else []
    if rest > 0 and cards:
        plan.append(PlanPart(rest, card_label(cards[0]), False))
        rest = 0
    return plan, rest


# ------------------------------------------------------------------ sending ---
def _link(endpoint: str, fallback_path: str = "/", **values) -> str:
    from app.mail import first_external_url

    return first_external_url((endpoint,), fallback_path, **values)


def _invoice_context(session: Session, invoice: Invoice) -> dict:
    plan, unpaid = payment_plan(session, invoice)
    return {
        "invoice": invoice,
        "due_date": invoice_due_date(invoice),
        "plan": plan,
        "unpaid_cents": unpaid,
        "invoice_link": _link("customer.invoice_detail", f"/invoices/{invoice.id}", invoice_id=invoice.id),
    }


def _enrich_invoice(session: Session, notification: Notification, context: dict) -> dict | None:
    invoice = session.get(Invoice, int(context["invoice_id"]))
    if invoice is None or invoice.customer_id != notification.customer_id:
        return None
    extra = _invoice_context(session, invoice)
    extra["payments"] = [{"label": payment_source_label(session, p), "amount_cents": p.amount_cents,
                          "at": p.created_at, "reference": p.payment_intent_id or p.reference}
                         for p in invoice.payments]
    extra["attempts"] = [a for a in invoice_attempts(session, invoice.id) if a.status in REFUSED_STATES]
    return extra


def _enrich_payment_failed(session: Session, notification: Notification, context: dict) -> dict | None:
    extra = _enrich_invoice(session, notification, context)
    if extra is None:
        return None
    attempt = session.get(ChargeAttempt, int(context["attempt_id"]))
    if attempt is None or attempt.customer_id != notification.customer_id:
        return None
    since = attempt.created_at - timedelta(hours=1)
    extra["attempts"] = [a for a in extra["attempts"] if a.id <= attempt.id and a.at >= since]
    return extra


# kind → function(session, notification, stored context) returning what to add (None: cannot render)
def _enrich_account_links(session: Session, notification: Notification, context: dict) -> dict:
    """Security notices (app.accounts) link to logging in and to resetting the password."""
    return {"login_link": _link("auth.login", "/login"), "reset_link": _link("auth.forgot_password", "/password/forgot")}


ENRICHERS: dict[str, Callable[[Session, Notification, dict], dict | None]] = {
    "password_changed": _enrich_account_links,
    "signup_attempt": _enrich_account_links,
    "invoice_issued": _enrich_invoice,
    "payment_receipt": _enrich_invoice,
    "payment_failed": _enrich_payment_failed,
}


def _payment_failed_obsolete(session: Session, notification: Notification) -> bool:
    invoice = session.get(Invoice, int(notification.context["invoice_id"]))
    return invoice is None or invoice.state != "open" or invoice.amount_due_cents <= 0


# kind → function(session, notification) → True when it should no longer go out (recorded as cancelled)
OBSOLETE: dict[str, Callable[[Session, Notification], bool]] = {
    "payment_failed": _payment_failed_obsolete,
}


def claim_notification(session: Session, notification_id: int, now: datetime) -> Notification | None:
    return outbox.claim(session, Notification, notification_id, now, CLAIM_DURATION)


def decide(session: Session, notification: Notification) -> str:
    """'send', or why not: 'skipped' (receipts turned off since it was queued) or 'cancelled'."""
    if is_optional(notification.kind) and not receipts_enabled(session, notification.customer_id):
        return "skipped"
    obsolete = OBSOLETE.get(notification.kind)
    if obsolete is not None and obsolete(session, notification):
        return "cancelled"
    return "send"


def compose(session: Session, notification: Notification):
    """The email for a claimed notification (text + HTML, attachment rendered now). Needs an app
    context. Returns None when what it is about is gone (it is then cancelled)."""
    from app.mail import build_message

    customer = session.get(User, notification.customer_id)
    if customer is None:
        return None
    context = dict(notification.context or {})
    enrich = ENRICHERS.get(notification.kind)
    if enrich is not None:
        extra = enrich(session, notification, context)
        if extra is None:
            return None
        context.update(extra)
    attachments = []
    if notification.attachment:
        name, ref = notification.attachment
        rendered = ATTACHMENTS[name](session, notification.customer_id, ref)
        if rendered is None:
            return None
        attachments.append(rendered)
    context.setdefault("invoices_link", _link("customer.invoices", "/invoices"))
    context.setdefault("cards_link", _link("customer.cards", "/cards"))
    context.setdefault("balance_link", _link("customer.balance", "/balance"))
    context.setdefault("dashboard_link", _link("customer.dashboard", "/dashboard"))
    context.setdefault("settings_link", _link("customer.notification_settings", "/settings/notifications"))
    for name in ("at", "until"):
        if isinstance(context.get(name), str):
            context[name] = datetime.fromisoformat(context[name])
    context["customer"] = customer
    context["optional"] = is_optional(notification.kind)
    return build_message(customer.email, notification.subject, notification.template, attachments=attachments,
                         message_id=notification.message_id, **context)


def mark_sent(session: Session, notification_id: int, to_email: str, now: datetime) -> None:
    outbox.finish(session, Notification, notification_id, "sent", sent_at=now, to_email=to_email, last_error=None)


def mark_not_sent(session: Session, notification_id: int, status: str, now: datetime) -> None:
    """Skipped (receipts off) or cancelled (pointless by now): recorded, never sent."""
    outbox.finish(session, Notification, notification_id, status, count_attempt=False, skipped_at=now)


def mark_failed(session: Session, notification_id: int, now: datetime, error: str) -> None:
    outbox.release_after_failure(session, Notification, notification_id, now, error, SEND_BACKOFF)


def due_notifications(session: Session, now: datetime | None = None, limit: int = 500) -> list[int]:
    """What the sweep re-enqueues (pending past their time, expired claims). Commits."""
    return outbox.due_ids(session, Notification, now or utcnow(), REQUEUE_AFTER, limit=limit)


def notifications_of(session: Session, customer_id: int, limit: int = 100) -> list[Notification]:
    return list(session.scalars(
        select(Notification).where(Notification.customer_id == customer_id)
        .order_by(Notification.created_at.desc(), Notification.id.desc()).limit(limit)
    ))


# ------------------------------------------------------------ the triggers ---
# Each is called by the service where the event happens, in its transaction (none commits).
def announce_invoice_issued(session: Session, invoice: Invoice) -> bool:
    return queue_notification(
        session, user_id=invoice.customer_id, kind="invoice_issued", key=f"invoice-issued:{invoice.id}",
        subject=f"Your Paydesk invoice {invoice.number}", template="invoice_issued",
        context={"invoice_id": invoice.id}, attachment=("invoice_pdf", invoice.id),
    )


def announce_payment_receipt(session: Session, invoice: Invoice) -> bool:
    """The invoice is fully paid: a receipt listing what paid it."""
    return queue_notification(
        session, user_id=invoice.customer_id, kind="payment_receipt", key=f"payment-receipt:{invoice.id}",
        subject=f"Receipt: invoice {invoice.number} is paid", template="payment_receipt",
        context={"invoice_id": invoice.id}, attachment=("invoice_pdf", invoice.id),
    )


def announce_payment_failed(session: Session, attempt: ChargeAttempt, invoice_number: str | None) -> bool:
    """Every usable card was tried for the invoice and refused (the last refusal is `attempt`)."""
    return queue_notification(
        session, user_id=attempt.customer_id, kind="payment_failed",
        key=f"payment-failed:{attempt.invoice_id}:{attempt.id}",
        subject=f"Payment failed for invoice {invoice_number or attempt.invoice_id}", template="payment_failed",
        context={"invoice_id": attempt.invoice_id, "attempt_id": attempt.id},
    )


def topup_receipt(payment_intent_id: str, amount_cents: int, at: datetime) -> dict:
    """The top-up receipt's kind, key, subject, template and context (one definition, also for the
    one-statement webhook credit in app.billing.topups)."""
    return {
        "kind": "topup_receipt", "key": f"topup-receipt:{payment_intent_id}",
        "subject": "Receipt: your Paydesk balance was topped up", "template": "topup_receipt",
        "context": {"amount_cents": amount_cents, "payment_intent_id": payment_intent_id, "at": at.isoformat()},
    }


def announce_topup(session: Session, customer_id: int, *, payment_intent_id: str, amount_cents: int,
                   at: datetime) -> bool:
    return queue_notification(session, user_id=customer_id, **topup_receipt(payment_intent_id, amount_cents, at))


def _card_context(card: Card) -> dict:
    return {"card": card_label(card), "card_id": card.id, "exp": f"{card.exp_month:02d}/{card.exp_year}"}


def announce_card_added(session: Session, card: Card, now: datetime) -> bool:
    return queue_notification(
        session, user_id=card.customer_id, kind="card_added", key=f"card-added:{card.id}",
        subject=f"Security notice: {card_label(card)} was added to your account", template="card_changed",
        context={**_card_context(card), "change": "added", "default": bool(card.is_default), "at": now.isoformat()},
    )


def announce_card_removed(session: Session, card: Card, now: datetime, new_default: Card | None) -> bool:
    context = {**_card_context(card), "change": "removed", "at": now.isoformat(),
               "new_default": card_label(new_default) if new_default is not None else None}
    return queue_notification(
        session, user_id=card.customer_id, kind="card_removed", key=f"card-removed:{card.id}",
        subject=f"Security notice: {card_label(card)} was removed from your account", template="card_changed",
        context=context,
    )


def announce_default_changed(session: Session, card: Card, previous: Card | None, now: datetime) -> bool:
    return queue_notification(
        session, user_id=card.customer_id, kind="card_default_changed",
        key=f"card-default:{card.id}:{now.isoformat()}",
        subject=f"Security notice: {card_label(card)} is now your default card", template="card_changed",
        context={**_card_context(card), "change": "default", "at": now.isoformat(),
                 "previous": card_label(previous) if previous is not None else None},
    )


def _deployments_key(deployment_ids: list[int]) -> str:
    return hashlib.sha256(",".join(map(str, sorted(deployment_ids))).encode()).hexdigest()[:24]


def announce_deployments_marked(session: Session, customer_id: int, deployments: list, *, reason: str,
                                now: datetime) -> bool:
    ids = [d.id for d in deployments]
    return queue_notification(
        session, user_id=customer_id, kind="deployments_marked_for_deletion",
        key=f"deployments-marked:{customer_id}:{_deployments_key(ids)}",
        subject="Your deployments are marked for deletion", template="deployments_marked",
        context={"deployments": [{"id": d.id, "name": d.name, "plan": d.plan_name} for d in deployments],
                 "reason": reason, "at": now.isoformat()},
    )


def announce_deployment_deleted(session: Session, deployment, now: datetime) -> bool:
    """A deployment marked for deletion (unpaid invoices) was deleted by the platform."""
    return queue_notification(
        session, user_id=deployment.customer_id, kind="deployments_deleted",
        key=f"deployment-deleted:{deployment.id}",
        subject=f"Your deployment {deployment.name} was deleted", template="deployment_deleted",
        context={"deployment": {"id": deployment.id, "name": deployment.name, "plan": deployment.plan_name},
                 "reason": deployment.deletion_reason, "at": now.isoformat()},
    )


def announce_grace_extended(session: Session, customer_id: int, until: datetime, days: int) -> bool:
    return queue_notification(
        session, user_id=customer_id, kind="grace_extended",
        key=f"grace-extended:{customer_id}:{until.isoformat()}",
        subject=f"More time to pay: your deployments are safe until {until:%Y-%m-%d}", template="grace_extended",
        context={"until": until.isoformat(), "days": days},
    )
