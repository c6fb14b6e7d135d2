"""Admin credit notes: the form on the invoice page (with a live preview that writes nothing),
issuing, the PDF, and the list/CSV on the Invoices page."""

import re
import secrets
from decimal import ROUND_HALF_EVEN, Decimal

from flask import Response, abort, flash, redirect, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from wtforms import BooleanField, HiddenField, TextAreaField
from wtforms.validators import Length, Optional

from app.billing import credit_notes as service
from app.billing.money import InvalidAmount, format_money, minor_unit_factor, to_decimal
from app.billing.money_input import parse_money_cents
from app.billing.periods import InvalidPeriod, period_bounds
from app.extensions import db
from app.models import Invoice, User
from app.models.credit_note import CreditNote
from app.pdf import render_credit_note_pdf
from app.web.admin import bp
from app.web.csv_export import csv_response
from app.web.helpers import admin_required, id_from_text

MAX_INPUT_LENGTH = 32
HOURS_PATTERN = re.compile(r"[0-9]{1,7}(\.[0-9]{1,6})?")
MAX_HOURS = 10**6
LIST_LIMIT = 50


class CreditNoteForm(FlaskForm):
    credit_reason = TextAreaField("Reason (printed on the credit note)", validators=[Length(max=service.MAX_REASON)])
    credit_memo = TextAreaField("Internal memo (never shown to the customer)", validators=[Optional(), Length(max=2000)])
    card_refund = BooleanField("Refund the card part to the card (otherwise it goes to the cash balance)")
    request_key = HiddenField()


# ------------------------------------------------------------------ input ---
def parse_hours(text: str) -> int:
    """'12.5' hours → seconds (half-even): plain digits with at most 6 decimal places, above zero."""
    if len(text) > MAX_INPUT_LENGTH or not HOURS_PATTERN.fullmatch(text):
        raise ValueError("Enter hours like 12.5.")
    hours = Decimal(text)
    if hours <= 0 or hours > MAX_HOURS:
        raise ValueError("Enter hours greater than zero, like 12.5.")
    return int((hours * 3600).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def line_inputs(data, invoice: Invoice) -> tuple[list[service.CreditLineInput], dict[str, str]]:
    """The credit lines typed into the form (`line-<id>-amount` / `line-<id>-hours`, one free line),
    and per-field errors. Empty fields are lines not credited."""
    inputs, errors = [], {}
    for line in sorted(invoice.lines, key=lambda line: line.position):
        amount_text = (data.get(f"line-{line.id}-amount") or "").strip()
        hours_text = (data.get(f"line-{line.id}-hours") or "").strip()
        if amount_text and hours_text:
            errors[f"line-{line.id}"] = "Credit an amount or hours, not both."
        elif amount_text:
            try:
                cents = parse_money_cents(amount_text, min_cents=1, max_cents=line.amount_cents)
                inputs.append(service.CreditLineInput(line.id, amount_cents=cents))
            except InvalidAmount as exc:
                errors[f"line-{line.id}"] = str(exc)
        elif hours_text:
            try:
                inputs.append(service.CreditLineInput(line.id, seconds=parse_hours(hours_text)))
            except ValueError as exc:
                errors[f"line-{line.id}"] = str(exc)
    free_description = (data.get("free-description") or "").strip()
    free_amount = (data.get("free-amount") or "").strip()
    if free_amount or free_description:
        try:
            cents = parse_money_cents(free_amount, min_cents=1, max_cents=invoice.total_cents) if free_amount else 0
            inputs.append(service.CreditLineInput(None, amount_cents=cents, description=free_description[:1000]))
        except InvalidAmount as exc:
            errors["free"] = str(exc)
    return inputs, errors


# ----------------------------------------------------------------- context ---
def credit_note_panel(invoice: Invoice, form: CreditNoteForm | None = None, values=None, errors=None,
                      plan=None, plan_error: str | None = None) -> dict:
    """What the invoice page needs for its credit-note section."""
    session = db.session
    notes = service.credit_notes_of_invoice(session, invoice.id)
    credited = service.credited_so_far(session, invoice.id)
    if form is None:
        form = CreditNoteForm(formdata=None, credit_reason=(values or {}).get("credit_reason", ""))
    if not form.request_key.data:
        form.request_key.data = secrets.token_urlsafe(16)
    return {
        "credit_notes": notes,
        "credit_form": form,
        "credit_values": values or {},
        "credit_errors": errors or {},
        "credited": credited,
        "creditable_cents": invoice.total_cents - credited.total_cents,
        "can_credit": invoice.state in service.CREDITABLE_STATES and invoice.total_cents > credited.total_cents,
        "has_card_payments": any(p.source == "card" for p in invoice.payments),
        "plan": plan,
        "plan_error": plan_error,
    }


def _invoice(invoice_id: int) -> Invoice:
    invoice = db.session.get(Invoice, invoice_id)
    if invoice is None:
        abort(404)
    return invoice


def _plan(invoice: Invoice, form: CreditNoteForm):
    inputs, errors = line_inputs(request.form, invoice)
    if errors:
        return inputs, errors, None, "Correct the marked lines."
    if not inputs:
        return inputs, errors, None, None
    try:
        return inputs, errors, service.plan_credit_note(db.session, invoice, inputs,
                                                        card_refund=bool(form.card_refund.data)), None
    except service.CreditNoteError as exc:
        return inputs, errors, None, str(exc)


# ------------------------------------------------------------------ routes ---
@bp.post("/invoices/<id:invoice_id>/credit-notes/preview")
@admin_required
def preview_credit_note(invoice_id: int):
    """Compute the credit note the form describes; writes nothing."""
    from flask import render_template

    invoice = _invoice(invoice_id)
    form = CreditNoteForm()
    if not form.validate_on_submit():
        abort(400)
    _, errors, plan, plan_error = _plan(invoice, form)
    body = render_template("admin/_credit_note_preview.html", invoice=invoice, plan=plan, plan_error=plan_error,
                           credit_errors=errors)
    return body, (422 if plan_error else 200)


@bp.post("/invoices/<id:invoice_id>/credit-notes")
@admin_required
def issue_credit_note(invoice_id: int):
    from app.web.admin.invoices import _render_detail

    invoice = _invoice(invoice_id)
    form = CreditNoteForm()
    values = request.form.to_dict()
    if not form.validate_on_submit():
        return _render_detail(invoice, credit=credit_note_panel(invoice, form, values), status=400)
    inputs, errors, _, plan_error = _plan(invoice, form)
    if errors or not inputs:
        return _render_detail(invoice, credit=credit_note_panel(
            invoice, form, values, errors, plan_error=plan_error or "Credit at least one line."), status=400)
    try:
        note = service.issue_credit_note(
            db.session, invoice.id, inputs, reason=form.credit_reason.data or "", memo=form.credit_memo.data,
            card_refund=bool(form.card_refund.data), actor_id=current_user.id, request_key=form.request_key.data or "",
        )
    except service.CreditNoteError as exc:
        db.session.expire_all()
        invoice = _invoice(invoice_id)
        return _render_detail(invoice, credit=credit_note_panel(invoice, form, values, plan_error=str(exc)),
                              status=409)
    flash(f"Credit note {note.number} issued: {format_money(note.total_cents)}.", "success")
    return redirect(url_for("admin.invoice_detail", invoice_id=invoice_id), 303)


@bp.get("/credit-notes/<id:credit_note_id>/pdf")
@admin_required
def credit_note_pdf(credit_note_id: int):
    note = db.session.get(CreditNote, credit_note_id)
    if note is None:
        abort(404)
    pdf = render_credit_note_pdf(note, db.session.get(Invoice, note.invoice_id))
    return Response(pdf, mimetype="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="credit-note-{note.number}.pdf"'})


def filtered_credit_notes(args):
    """Credit notes matching the Invoices page's customer and period filters (period = issue month)."""
    query = (
        select(CreditNote, Invoice.number, User.email)
        .join(Invoice, Invoice.id == CreditNote.invoice_id)
        .join(User, User.id == CreditNote.customer_id)
    )
    customer = (args.get("customer") or "").strip()[:200]
    if customer:
        if (customer_id := id_from_text(customer)) is not None:
            query = query.where(CreditNote.customer_id == customer_id)
        else:
            query = query.where(func.lower(User.email).contains(customer.lower()))
    period = (args.get("period") or "").strip()
    if period:
        try:
            start, end = period_bounds(period)
        except InvalidPeriod as exc:
            abort(400, description=str(exc))
        query = query.where(CreditNote.issued_at >= start, CreditNote.issued_at < end)
    return query.order_by(CreditNote.issued_at.desc(), CreditNote.id.desc())


def _plain(cents: int) -> Decimal:
    return to_decimal(cents).quantize(Decimal(1) / minor_unit_factor())


@bp.get("/credit-notes.csv")
@admin_required
def credit_notes_csv():
    header = ["number", "invoice", "customer_id", "email", "issued_at", "currency", "subtotal", "tax", "total",
              "applied_to_due", "to_voucher_balance", "to_cash_balance", "card_part", "card_refunded", "reason", "memo"]
    rows = (
        [note.number, invoice_number, note.customer_id, email, note.issued_at.isoformat(), note.currency,
         _plain(note.subtotal_cents), _plain(note.tax_cents), _plain(note.total_cents),
         _plain(note.applied_to_due_cents), _plain(note.returned_voucher_cents), _plain(note.returned_cash_cents),
         _plain(note.returned_card_cents), "yes" if note.card_refund else "no", note.reason, note.memo or ""]
        for note, invoice_number, email in db.session.execute(filtered_credit_notes(request.args))
    )
    return csv_response("credit-notes.csv", header, rows)


def credit_notes_for_list(args) -> tuple[list, int]:
    query = filtered_credit_notes(args)
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    return list(db.session.execute(query.limit(LIST_LIMIT))), total
