"""Monthly usage invoicing (SPEC §7).

For a period (a calendar month UTC) every customer with billable usage gets an invoice: one line
per deployment = its unbilled running seconds up to the end of the period × its snapshot hourly
price, rounded half-even per line; tax on the subtotal; issued (gapless number) and settlement
requested.

An invoice only ever bills time that has passed: a period that has not started is refused
(`PeriodNotStarted`), and an invoice for the current period bills up to now ("month to date":
`period_end` = the second it was issued). The rest of that period is billed later, once, by the
next invoice for the same period (the monthly job on the 1st, or the admin again): its
`period_start` is where the previous one ended.

Guarantees, on both paths:
- at most one invoice per customer and period that reaches the end of the period, plus any
  month-to-date invoices before it (unique (billing_period, customer_id, period_end); customers
  whose invoices already reach the end of what can be billed are skipped), so re-running the job
  creates nothing;
- usage already invoiced is never billed again: each line names its deployment and the seconds it
  bills, and a deployment's billable seconds are its running seconds minus the seconds of its lines.
  A late event for a closed period therefore lands on the next invoice;
- every invoicing run holds one PostgreSQL advisory lock, so concurrent runs (two workers, the
  admin action during the job) serialise: the second sees the first's invoices and skips them.

Two paths with the same result: `issue_customer_invoice` (one customer, through
app.billing.invoices create_invoice/issue_invoice; portable) and `issue_monthly_invoices_bulk`
(set-based INSERT … SELECT for all customers at once, numbers assigned in bulk from the per-year
counter row locked once; PostgreSQL only).
"""

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from flask import current_app, has_app_context
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.billing import notifications
from app.billing.audit import record_audit
from app.billing.invoices import payment_terms, seller_details
from app.billing.money import minor_unit_factor
from app.billing.tax import country_vat_rates, default_vat_rate, reverse_charge_countries, tax_treatment
from app.billing.usage import period_bounds, period_of, previous_period, running_seconds, unbilled_usage
from app.models import Invoice, InvoiceLine, User
from app.models.base import utcnow
from app.models.usage import Deployment, DeploymentEvent

log = logging.getLogger(__name__)
INVOICING_LOCK_KEY = 7_300_505  # pg_advisory_xact_lock key shared by every invoicing run
# a run of at most this many invoices hands its settlement requests and notifications to the after-commit
# hooks (enqueued at once); a larger one leaves them to the periodic sweeps (jobs.notifications does the same)
HANDOVER_LIMIT = 1000


class InvoicingError(Exception):
    """Base of invoicing errors; the message is fit for the admin."""


class InvoiceAlreadyIssued(InvoicingError):
    pass


class NothingToInvoice(InvoicingError):
    pass


class PeriodNotStarted(InvoicingError):
    pass


def billable_until(period: str, now: datetime | None = None) -> tuple[datetime, datetime, datetime]:
    """(start, end, until) of `period`, where `until` = min(end, now) is how far an invoice issued now
    may bill (whole seconds). Raises PeriodNotStarted for a period that has not started yet."""
    start, end = period_bounds(period)
    now = (now or utcnow()).astimezone(UTC).replace(microsecond=0)
    if now <= start:
        raise PeriodNotStarted(
            f"{period} has not started yet: an invoice only bills time that has passed "
            f"(the current period is {period_of(now)})."
        )
    return start, end, min(end, now)


def is_month_to_date(invoice: Invoice) -> bool:
    """True for a usage invoice that stops before the end of its period (issued during it)."""
    if not invoice.billing_period or invoice.period_end is None:
        return False
    return invoice.period_end < period_bounds(invoice.billing_period)[1]


@dataclass
class MonthlyReport:
    period: str
    invoices: int = 0
    lines: int = 0
    invoice_ids: list[int] = field(default_factory=list)


def _config(key: str, default=None):
    return current_app.config.get(key, default) if has_app_context() else default


# ----------------------------------------------------------------------- tax ---
# The rule lives in app.billing.tax; these names stay importable from here.
def tax_rate_for(country: str | None, vat_id: str | None = None) -> Decimal:
    """VAT rate for a buyer (reverse charge → 0; else the country rule, else VAT_RATE)."""
    return tax_treatment(country, vat_id).rate


# --------------------------------------------------------------------- locks ---
def _lock_invoicing(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": INVOICING_LOCK_KEY})


# ------------------------------------------------------------ one customer ---
def issue_customer_invoice(
    session: Session, customer_id: int, period: str, *, actor_id: int | None = None, now: datetime | None = None
) -> Invoice:
    """Issue one customer's usage invoice for `period` and commit: the unbilled usage up to the end of
    the period, or up to now for the current period (month to date). Raises PeriodNotStarted for a
    future period, InvoiceAlreadyIssued when the customer's invoices for the period already reach
    its end, NothingToInvoice when there is nothing billable."""
    from app.billing.invoices import LineSpec, create_invoice, issue_invoice

    now = now or utcnow()
    start, end, until = billable_until(period, now)
    _lock_invoicing(session)
    try:
        issued = session.execute(
            select(Invoice.number, Invoice.period_end)
            .where(Invoice.customer_id == customer_id, Invoice.billing_period == period)
        ).all()
        covered_until = max((row.period_end or end for row in issued), default=None)
        if covered_until is not None and covered_until >= end:
            numbers = ", ".join(sorted(row.number or "draft" for row in issued))
            raise InvoiceAlreadyIssued(f"This customer already has an invoice for {period} ({numbers}).")
        if covered_until is not None and covered_until >= until:
            raise NothingToInvoice(f"{period} is already invoiced up to now; the rest is billed later.")
        usage = unbilled_usage(session, customer_id, until)
        if sum(line.amount_cents for line in usage) <= 0:
            raise NothingToInvoice(f"Nothing to invoice for {period}.")
        # the buyer's profile cannot change between the tax decision and the snapshot at issue
        session.scalar(select(User.id).where(User.id == customer_id).with_for_update())
        specs = [
            LineSpec(
                description=line.deployment.name,
                amount_cents=line.amount_cents,
                plan_name=line.deployment.plan_name,
                deployment_id=line.deployment.id,
                seconds=line.seconds,
                hourly_price=line.deployment.hourly_price,
            )
            for line in usage
        ]
        invoice = create_invoice(
            session,
            customer_id,
            specs,
            billing_period=period,
            period_start=covered_until or start,
            period_end=until,
        )
        invoice = issue_invoice(session, invoice.id, now=now)
        if actor_id is not None:
            record_audit(
                session, actor_id, "invoice.issue_usage", "invoice", invoice.id, None,
                {"customer_id": customer_id, "period": period, "number": invoice.number,
                 "total_cents": invoice.total_cents, "period_start": invoice.period_start.isoformat(),
                 "period_end": invoice.period_end.isoformat()},
            )
        session.commit()
        return invoice
    except Exception:
        session.rollback()
        raise


# ------------------------------------------------------------ all customers ---
# One statement does the whole run (data-modifying CTEs, no temp tables, no round trips):
# usage per deployment → totals and tax per customer → invoices (numbers last_seq+1 … last_seq+n in
# customer order) → their lines (deployment and seconds: what is billed) → settlement outbox rows → the
# invoice-issued notification of each invoice → the counter moved by n. Only counts (and the ids of
# a small run, for the after-commit hooks) come back: a large run's notifications and settlements
# are picked up by the periodic sweeps, which read the outbox rows this statement wrote.
# Customers whose invoices for the period already reach :until are skipped (NOT EXISTS, under the advisory
# lock); after a month-to-date invoice, the new one starts where that one ended.
#
# A line's amount is seconds × hourly price rounded half-even to the minor unit, in exact integers:
# n = price in millionths × seconds × minor units per unit, amount = n / 3.6e9 rounded half-even. In
# bigint where n cannot overflow (price ≤ 1000 per hour, seconds ≤ 9·10⁶, factor ≤ 1000: n ≤ 9·10¹⁸),
# else in numeric; the same result either way, bigint is several times cheaper per line.
#
# Foreign keys hold by construction. Each new invoice's customer and each line's deployment is a row
# this statement read, and users and deployments are never deleted nor change id (the database refuses
# it, in every session), so none can go away before commit: no row lock is needed. A line's invoice_id
# is the id RETURNING gave for its invoice; a settlement request and a notification have the customer
# of their invoice. So when the database role may set session_replication_role, the caller turns the
# row-by-row foreign-key triggers off for this statement only (about 10^7 trigger calls at 10⁶
# customers, most of the run's time); otherwise they run too and check what already holds.
_BULK_SQL = """
WITH ev AS (
    SELECT e.deployment_id, e.kind, e.occurred_at,
           LEAD(e.occurred_at) OVER (PARTITION BY e.deployment_id ORDER BY e.occurred_at, e.id) AS next_at
    FROM deployment_events e
    WHERE e.occurred_at < :until
), run AS (
    SELECT deployment_id,
           EXTRACT(EPOCH FROM SUM(LEAST(COALESCE(next_at, :until), :until) - occurred_at))::bigint
               AS seconds  -- intervals add exactly; one numeric EXTRACT per deployment, not per interval
    FROM ev WHERE kind IN ('succeeded', 'resumed')
    GROUP BY deployment_id
), billed AS (
    SELECT deployment_id, SUM(seconds)::bigint AS seconds FROM invoice_lines WHERE deployment_id IS NOT NULL
    GROUP BY deployment_id
), todo AS (
    SELECT d.id AS deployment_id, d.customer_id, d.name, d.plan_name, d.hourly_price,
           run.seconds - COALESCE(billed.seconds, 0) AS seconds
    FROM run
    JOIN deployments d ON d.id = run.deployment_id
    LEFT JOIN billed ON billed.deployment_id = run.deployment_id
    WHERE run.seconds - COALESCE(billed.seconds, 0) > 0
), priced AS (
    SELECT todo.*,
           CASE WHEN todo.hourly_price <= 1000 AND todo.seconds <= 9000000 AND :factor <= 1000
                THEN CAST(todo.hourly_price * 1000000 AS bigint) * todo.seconds * :factor END AS n_fast
    FROM todo
), divided AS (
    SELECT priced.*,
           CASE WHEN n_fast IS NULL THEN (hourly_price * 1000000) * seconds * :factor END AS n_exact
    FROM priced
), usage AS MATERIALIZED (
    SELECT deployment_id, customer_id, name, plan_name, hourly_price, seconds,
           CASE WHEN n_fast IS NOT NULL THEN
                n_fast / 3600000000 + CASE WHEN 2 * (n_fast % 3600000000) > 3600000000 THEN 1
                                           WHEN 2 * (n_fast % 3600000000) = 3600000000 THEN (n_fast / 3600000000) % 2
                                           ELSE 0 END
           ELSE (div(n_exact, 3600000000)
                 + CASE WHEN 2 * mod(n_exact, 3600000000) > 3600000000 THEN 1
                        WHEN 2 * mod(n_exact, 3600000000) = 3600000000 THEN mod(div(n_exact, 3600000000), 2)
                        ELSE 0 END)::bigint
           END AS amount_cents
    FROM divided
), sums AS (
    SELECT customer_id, SUM(amount_cents)::bigint AS subtotal FROM usage
    GROUP BY customer_id HAVING SUM(amount_cents) > 0
), buyers AS (
    SELECT s.customer_id, s.subtotal, COALESCE(r.rate, CAST(:default_rate AS numeric)) AS country_rate,
           (COALESCE(trim(u.vat_id), '') <> '' AND upper(u.country) = ANY(CAST(:reverse_charge_countries AS text[])))
               AS reverse_charge,
           row_number() OVER (ORDER BY s.customer_id) AS rn, COALESCE(c.covered_until, :period_start) AS starts,
           u.name, u.company, u.address, u.postcode, u.city, u.country, u.vat_id, u.email
    FROM sums s JOIN users u ON u.id = s.customer_id
    LEFT JOIN (SELECT customer_id, MAX(period_end) AS covered_until FROM invoices WHERE billing_period = :period
               GROUP BY customer_id) c ON c.customer_id = s.customer_id
    LEFT JOIN (SELECT * FROM unnest(CAST(:countries AS text[]), CAST(:rates AS numeric[])) AS x(country, rate)) r
           ON r.country = upper(u.country)
    WHERE NOT EXISTS (SELECT 1 FROM invoices i WHERE i.customer_id = s.customer_id AND i.billing_period = :period
                      AND (i.period_end IS NULL OR i.period_end >= :until))
), rated AS (
    SELECT buyers.*, CASE WHEN reverse_charge THEN CAST(0 AS numeric) ELSE country_rate END AS rate FROM buyers
), taxed AS (
    SELECT rated.*, div(subtotal * rate * 10000, 10000) AS q, mod(subtotal * rate * 10000, 10000) AS r FROM rated
), new_invoices AS (
    INSERT INTO invoices (customer_id, state, number, number_year, number_seq, billing_period, period_start,
                          period_end, currency, subtotal_cents, tax_rate, tax_cents, total_cents, paid_cents,
                          buyer_name, buyer_company, buyer_address, buyer_postcode, buyer_city, buyer_country,
                          buyer_vat_id, buyer_email, seller_name, seller_address, seller_country, seller_vat_id,
                          reverse_charge, created_at, issued_at, due_at)
    SELECT t.customer_id, 'open', CAST(:year AS text) || '-' || lpad(CAST(:last_seq + t.rn AS text), 6, '0'),
           :year, :last_seq + t.rn, :period, t.starts, :until, :currency, t.subtotal, t.rate, t.tax,
           t.subtotal + t.tax, 0, t.name, t.company, t.address, t.postcode, t.city, t.country, t.vat_id, t.email,
           :seller_name, :seller_address, :seller_country, :seller_vat_id, t.reverse_charge, :now, :now, :due_at
    FROM (SELECT taxed.*,
                 (q + CASE WHEN 2 * r > 10000 THEN 1 WHEN 2 * r = 10000 THEN mod(q, 2) ELSE 0 END)::bigint AS tax
          FROM taxed) t
    ORDER BY t.customer_id  -- = rn order (rn numbers customers in this order), without sorting again
    RETURNING id, customer_id, number
), new_lines AS (
    INSERT INTO invoice_lines (invoice_id, position, description, plan_name, deployment_id, seconds,
                               hourly_price, amount_cents)
    SELECT i.id, row_number() OVER (PARTITION BY u.customer_id ORDER BY u.deployment_id) - 1, u.name,
           u.plan_name, u.deployment_id, u.seconds, u.hourly_price, u.amount_cents
    FROM usage u
    JOIN new_invoices i ON i.customer_id = u.customer_id
    RETURNING id
), settlements AS (
    INSERT INTO settlement_requests (customer_id, generation, requested_at)
    SELECT customer_id, 1, :now FROM new_invoices
    ON CONFLICT (customer_id) DO UPDATE SET generation = settlement_requests.generation + 1,
        requested_at = EXCLUDED.requested_at
    RETURNING customer_id
), issued AS (
    {issued_notifications}
), counter AS (
    UPDATE invoice_number_counters SET last_seq = last_seq + (SELECT count(*) FROM new_invoices)
    WHERE year = :year AND EXISTS (SELECT 1 FROM new_invoices)
    RETURNING last_seq
)
SELECT (SELECT count(*) FROM new_invoices) AS invoices,
       (SELECT count(*) FROM new_lines) AS lines,
       (SELECT last_seq FROM counter) AS last_seq,
       (SELECT CASE WHEN count(*) <= :handover_limit THEN array_agg(customer_id) END FROM settlements) AS customer_ids,
       (SELECT CASE WHEN count(*) <= :handover_limit THEN coalesce(array_agg(id) FILTER (WHERE status = 'pending'), '{{}}') END
        FROM issued) AS notification_ids
""".format(issued_notifications=notifications.bulk_insert_sql(
    "invoice_issued", "invoice_issued",
    "SELECT customer_id, 'invoice-issued:' || id AS key, 'Your Paydesk invoice ' || number AS subject, "
    "json_build_object('invoice_id', id) AS context, json_build_array('invoice_pdf', id) AS attachment "
    "FROM new_invoices",
    order_by_key=False, customers_known=True))


_OTHER_TRIGGERS_SQL = """
    SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE NOT tgisinternal AND tgrelid IN (
        'invoices'::regclass, 'invoice_lines'::regclass, 'settlement_requests'::regclass,
        'notifications'::regclass))"""


def _row_triggers_off(session: Session) -> bool:
    """Turn off the row-by-row foreign-key triggers until `SET LOCAL session_replication_role = origin`
    (or the end of the transaction) if this role may; False (triggers on) otherwise. The bulk statement's
    references hold by construction either way. Only while the tables it writes have no other trigger
    (replica mode would skip those too)."""
    if session.execute(text(_OTHER_TRIGGERS_SQL)).scalar_one():
        return False
    try:
        with session.begin_nested():
            session.execute(text("SET LOCAL session_replication_role = replica"))
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != "42501":  # insufficient_privilege
            raise
        return False
    return True


def issue_monthly_invoices_bulk(session: Session, period: str, *, now: datetime | None = None) -> MonthlyReport:
    """All customers of `period` in one set-based statement, one transaction; commits.

    The per-year counter row is locked (FOR UPDATE) before the statement and moved by the number of
    invoices written, in the same transaction, so numbers stay gapless and unique."""
    from app.billing import settlement_requests

    now = now or utcnow()
    start, _, until = billable_until(period, now)
    rates = country_vat_rates()
    year = now.astimezone(UTC).year
    report = MonthlyReport(period)
    try:
        _lock_invoicing(session)
        # sorts/hashes/CTE results of ~10^6 rows stay in memory (this transaction only; server-side, not the job's RSS);
        # no JIT: compiling the statement's expressions costs seconds and saves less than that
        session.execute(text("SET LOCAL work_mem = '512MB'"))
        session.execute(text("SET LOCAL jit = off"))
        session.execute(
            text("INSERT INTO invoice_number_counters (year, last_seq) VALUES (:y, 0) ON CONFLICT DO NOTHING"),
            {"y": year},
        )
        last_seq = session.execute(
            text("SELECT last_seq FROM invoice_number_counters WHERE year = :y FOR UPDATE"), {"y": year}
        ).scalar_one()
        triggers_off = _row_triggers_off(session)
        row = session.execute(
            text(_BULK_SQL),
            {"until": until, "period": period, "factor": minor_unit_factor(),
             "default_rate": default_vat_rate(), "countries": list(rates), "rates": list(rates.values()),
             "year": year, "last_seq": last_seq, "period_start": start, "currency": _config("CURRENCY", "usd"),
             "now": now, "handover_limit": HANDOVER_LIMIT, "due_at": now + payment_terms(),
             "reverse_charge_countries": reverse_charge_countries(), **seller_details(),
             **notifications.bulk_insert_params("invoice_issued", "invoice_issued", now)},
        ).one()
        if triggers_off:
            session.execute(text("SET LOCAL session_replication_role = origin"))
        report.invoices, report.lines = row.invoices, row.lines
        if report.invoices:
            if row.last_seq != last_seq + report.invoices:
                raise InvoicingError(f"the invoice counter of {year} did not move by {report.invoices}; nothing issued.")
            if row.notification_ids is None:
                log.info("%d invoice notifications left to the notification sweep", report.invoices)
            else:
                notifications.note_pending(session, row.notification_ids)
            if row.customer_ids:
                # enqueued after commit by app.billing.settlement_requests
                session.info.setdefault(settlement_requests._PENDING_KEY, set()).update(row.customer_ids)
        session.commit()
    except Exception:
        session.rollback()
        raise
    log.info("monthly invoicing %s: %d invoices, %d lines", period, report.invoices, report.lines)
    return report


def issue_monthly_invoices(session: Session, period: str | None = None, *, now: datetime | None = None) -> MonthlyReport:
    """The monthly job: the previous calendar month UTC unless `period` is given. Idempotent."""
    period = period or previous_period(now)
    billable_until(period, now)
    if session.get_bind().dialect.name == "postgresql":
        return issue_monthly_invoices_bulk(session, period, now=now)
    return issue_monthly_invoices_per_customer(session, period, now=now)


def issue_monthly_invoices_per_customer(session: Session, period: str, *, now: datetime | None = None) -> MonthlyReport:
    """Portable path (SQLite, tests): one customer at a time through create_invoice/issue_invoice."""
    now = now or utcnow()
    billable_until(period, now)
    report = MonthlyReport(period)
    customer_ids = list(session.scalars(select(Deployment.customer_id).distinct().order_by(Deployment.customer_id)))
    for customer_id in customer_ids:
        try:
            invoice = issue_customer_invoice(session, customer_id, period, now=now)
        except (InvoiceAlreadyIssued, NothingToInvoice):
            continue
        report.invoices += 1
        report.lines += len(invoice.lines)
        report.invoice_ids.append(invoice.id)
    return report


# ------------------------------------------------------------------ recompute ---
@dataclass(frozen=True)
class UsageDifference:
    deployment_id: int
    customer_id: int
    invoice_number: str | None
    billed_seconds: int
    recomputed_seconds: int
    billed_cents: int
    recomputed_cents: int


def recompute_usage(session: Session, period: str, *, now: datetime | None = None) -> tuple[int, list[UsageDifference]]:
    """Rebuild each deployment's running seconds inside `period` (up to now for the current period)
    from its events and compare them with what invoices for that period charged. Read-only: issued
    invoices are never changed. Returns (deployments checked, differences)."""
    from app.billing.money import usage_amount_cents

    start, _, end = billable_until(period, now)
    charged = {
        row.deployment_id: row
        for row in session.execute(
            select(InvoiceLine.deployment_id, func.sum(InvoiceLine.seconds).label("seconds"),
                   func.sum(InvoiceLine.amount_cents).label("cents"), func.min(Invoice.number).label("number"))
            .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
            .where(Invoice.billing_period == period, InvoiceLine.deployment_id.is_not(None))
            .group_by(InvoiceLine.deployment_id)
        )
    }
    candidate_ids = set(charged) | set(
        session.scalars(
            select(DeploymentEvent.deployment_id).distinct().where(DeploymentEvent.occurred_at < end)
        )
    )
    deployments = {d.id: d for d in session.scalars(select(Deployment).where(Deployment.id.in_(candidate_ids)))}
    from app.billing.usage import events_by_deployment

    events = events_by_deployment(session, sorted(candidate_ids))
    differences = []
    for deployment_id in sorted(candidate_ids):
        deployment = deployments[deployment_id]
        seconds = running_seconds(events.get(deployment_id, []), start, end)
        row = charged.get(deployment_id)
        billed_seconds = int(row.seconds) if row else 0
        if seconds != billed_seconds:
            differences.append(
                UsageDifference(
                    deployment_id, deployment.customer_id, row.number if row else None, billed_seconds, seconds,
                    int(row.cents) if row else 0, usage_amount_cents(deployment.hourly_price, seconds),
                )
            )
    return len(candidate_ids), differences
