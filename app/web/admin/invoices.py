"""Admin invoice pages (money core): list with filters and CSV export, detail, void, bank transfer, PDF."""

from decimal import Decimal

from flask import Response, abort, flash, redirect, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from wtforms import StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, Regexp

from app.billing import monthly
from app.billing.card_labels import card_label
from app.billing.invoice_document import invoice_document
from app.billing.invoices import InvoiceError, record_bank_transfer, void_invoice
from app.billing.money import format_money, minor_unit_factor, to_decimal
from app.billing.money_input import MAX_CENTS
from app.billing.periods import InvalidPeriod, period_bounds
from app.extensions import db
from app.models import Card, ChargeAttempt, Invoice, User
from app.models.invoice import INVOICE_STATES
from app.pdf import render_invoice_pdf
from app.web.admin import bp
from app.web.csv_export import csv_response
from app.web.helpers import admin_required, id_from_text, page_number, parse_money_field, render_page_or_block

PAGE_SIZE = 50


class VoidForm(FlaskForm):
    reason = TextAreaField("Reason", validators=[Optional(), Length(max=2000)])


class UsageInvoiceForm(FlaskForm):
    customer_email = StringField("Customer email", id="issue-customer-email", validators=[DataRequired(message="Enter the customer's email."),
                                                               Length(max=320)])
    period = StringField("Period", id="issue-period", validators=[DataRequired(message="Enter a period."),
                                               Regexp(r"^\d{4}-\d{2}$", message="Use YYYY-MM.")])


class BankTransferForm(FlaskForm):
    amount = StringField("Amount received (empty: all that is due)", validators=[Optional()])
    reference = StringField("Bank reference", validators=[Optional(), Length(max=200)])


def _filtered_query(args):
    query = select(Invoice).join(User, User.id == Invoice.customer_id)
    state = args.get("state", "")
    if state in INVOICE_STATES:
        query = query.where(Invoice.state == state)
    customer = (args.get("customer") or "").strip()
    if customer:
        if (customer_id := id_from_text(customer)) is not None:
            query = query.where(Invoice.customer_id == customer_id)
        else:
            query = query.where(func.lower(User.email).contains(customer.lower()))
    period = (args.get("period") or "").strip()
    if period:
        try:
            start, end = period_bounds(period)
        except InvalidPeriod as exc:
            abort(400, description=str(exc))
        query = query.where(
            (Invoice.billing_period == period) | ((Invoice.issued_at >= start) & (Invoice.issued_at < end))
        )
    return query.order_by(Invoice.issued_at.desc().nulls_last(), Invoice.id.desc())


@bp.get("/invoices")
@admin_required
def invoices():
    return _render_list()


def _render_list(invoice_form: UsageInvoiceForm | None = None, status: int = 200):
    query = _filtered_query(request.args)
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    page = page_number((total + PAGE_SIZE - 1) // PAGE_SIZE)
    rows = list(db.session.scalars(query.offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)))
    emails = dict(db.session.execute(select(User.id, User.email).where(User.id.in_({i.customer_id for i in rows}))).all())
    from app.web.admin.credit_notes import credit_notes_for_list

    credit_notes, credit_note_total = credit_notes_for_list(request.args)
    return render_page_or_block(
        "admin/invoices.html", "invoice_table", invoices=rows, emails=emails, states=INVOICE_STATES,
        args=request.args, page=page, pages=max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1), total=total,
        credit_notes=credit_notes, credit_note_total=credit_note_total,
        invoice_form=invoice_form or UsageInvoiceForm(formdata=None),
    ), status


@bp.get("/invoices.csv")
@admin_required
def invoices_csv():
    header = ["number", "customer_id", "email", "state", "issued_at", "billing_period", "currency",
              "subtotal", "tax", "total", "paid", "due", "due_date", "buyer_vat_id", "reverse_charge"]
    rows = (
        [
            invoice.number, invoice.customer_id, email, invoice.state,
            invoice.issued_at.isoformat() if invoice.issued_at else "", invoice.billing_period or "",
            invoice.currency, _plain_amount(invoice.subtotal_cents), _plain_amount(invoice.tax_cents),
            _plain_amount(invoice.total_cents), _plain_amount(invoice.paid_cents),
            _plain_amount(invoice.amount_due_cents),
            invoice.due_at.date().isoformat() if invoice.due_at else "", invoice.buyer_vat_id or "",
            "yes" if invoice.reverse_charge else "no",
        ]
        for invoice, email in db.session.execute(_filtered_query(request.args).add_columns(User.email))
    )
    return csv_response("invoices.csv", header, rows)


def _plain_amount(cents: int) -> Decimal:
    """25.00 for the CSV: major units with the currency's number of decimals, no symbol."""
    return to_decimal(cents).quantize(Decimal(1) / minor_unit_factor())


def _invoice_or_404(invoice_id: int) -> Invoice:
    invoice = db.session.get(Invoice, invoice_id)
    if invoice is None:
        abort(404)
    return invoice


def _render_detail(invoice: Invoice, void_form=None, transfer_form=None, status: int = 200, credit=None):
    from app.web.admin.credit_notes import credit_note_panel

    attempts = list(db.session.scalars(
        select(ChargeAttempt).where(ChargeAttempt.invoice_id == invoice.id).order_by(ChargeAttempt.id)
    ))
    if credit is None:
        credit = credit_note_panel(invoice, values=request.args.to_dict() if request.method == "GET" else None)
    cards = {card.id: card for card in db.session.scalars(
        select(Card).where(Card.id.in_({attempt.card_id for attempt in attempts}))
    )} if attempts else {}
    body = render_page_or_block(
        "admin/invoice_detail.html", "invoice_actions", invoice=invoice, attempts=attempts,
        attempt_cards={a.id: card_label(cards[a.card_id].brand, cards[a.card_id].last4) for a in attempts
                       if a.card_id in cards},
        doc=invoice_document(db.session, invoice),
        customer=db.session.get(User, invoice.customer_id),
        void_form=void_form or VoidForm(), transfer_form=transfer_form or BankTransferForm(), **credit,
    )
    return body, status


@bp.get("/invoices/<id:invoice_id>")
@admin_required
def invoice_detail(invoice_id: int):
    return _render_detail(_invoice_or_404(invoice_id))


@bp.get("/invoices/<id:invoice_id>/pdf")
@admin_required
def invoice_pdf(invoice_id: int):
    invoice = _invoice_or_404(invoice_id)
    return Response(render_invoice_pdf(invoice), mimetype="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="invoice-{invoice.number or invoice.id}.pdf"'})


@bp.post("/invoices/<id:invoice_id>/void")
@admin_required
def void(invoice_id: int):
    invoice = _invoice_or_404(invoice_id)
    form = VoidForm()
    if not form.validate_on_submit():
        return _render_detail(invoice, void_form=form, status=400)
    try:
        void_invoice(db.session, invoice.id, actor_id=current_user.id, reason=form.reason.data or None)
    except InvoiceError as exc:
        flash(str(exc), "error")
        return _render_detail(db.session.get(Invoice, invoice_id), void_form=form, status=409)
    flash(f"Invoice {invoice.number} voided.", "success")
    return redirect(url_for("admin.invoice_detail", invoice_id=invoice_id), 303)


@bp.post("/invoices/<id:invoice_id>/bank-transfer")
@admin_required
def mark_paid(invoice_id: int):
    invoice = _invoice_or_404(invoice_id)
    form = BankTransferForm()
    valid = form.validate_on_submit()
    amount = parse_money_field(form.amount, min_cents=1, max_cents=MAX_CENTS)  # empty: all that is due
    if not valid or form.amount.errors:
        return _render_detail(invoice, transfer_form=form, status=400)
    try:
        payment = record_bank_transfer(db.session, invoice.id, actor_id=current_user.id, amount_cents=amount,
                                       reference=form.reference.data or None)
    except InvoiceError as exc:
        form.amount.errors.append(str(exc))
        return _render_detail(db.session.get(Invoice, invoice_id), transfer_form=form, status=409)
    flash(f"Recorded a bank transfer of {format_money(payment.amount_cents)}.", "success")
    return redirect(url_for("admin.invoice_detail", invoice_id=invoice_id), 303)


@bp.post("/invoices/issue")
@admin_required
def issue_invoice():
    """Issue one customer's usage invoice for a period by hand (the rules are app.billing.monthly's)."""
    form = UsageInvoiceForm()
    if form.validate_on_submit():
        customer = db.session.scalar(
            select(User).where(func.lower(User.email) == form.customer_email.data.strip().lower(),
                               User.is_admin.is_(False))
        )
        if customer is None:
            form.customer_email.errors = [*form.customer_email.errors, "No customer with that email."]
        else:
            try:
                invoice = monthly.issue_customer_invoice(db.session, customer.id, form.period.data,
                                                         actor_id=current_user.id)
            except (monthly.InvoicingError, ValueError) as exc:
                form.period.errors = [*form.period.errors, str(exc)]
            else:
                what = form.period.data
                if monthly.is_month_to_date(invoice):
                    what += f", month to date up to {invoice.period_end:%Y-%m-%d %H:%M:%S} UTC (the rest is billed later)"
                flash(f"Invoice {invoice.number} issued to {customer.email} for {what}.", "success")
                return redirect(url_for("admin.invoice_detail", invoice_id=invoice.id), 303)
    return _render_list(invoice_form=form, status=422)
