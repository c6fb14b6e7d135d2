"""Customer invoice pages (money core): list, detail with payments, pay now, PDF, dashboard panel."""

from flask import Response, abort, flash, redirect, request, url_for
from flask_login import current_user
from sqlalchemy import exists, func, select
from sqlalchemy.orm import joinedload

from app.billing import card_attempts
from app.billing.credit_notes import credit_notes_of_invoice
from app.billing.invoice_document import invoice_document
from app.billing.settlement_requests import request_settlement
from app.extensions import db
from app.models import Invoice, SettlementRequest
from app.models.credit_note import CreditNote
from app.models.invoice import INVOICE_STATES
from app.pdf import render_credit_note_pdf, render_invoice_pdf
from app.web.customer import bp
from app.web.helpers import customer_required, is_htmx, owned_or_404, page_number, render_page_or_block

PAGE_SIZE = 20
MAX_PAGE = 10**9  # what page_number accepts at most (nine digits)
MAX_POLLS = 60
VISIBLE_STATES = tuple(s for s in INVOICE_STATES if s != "draft")


def _settlement_waiting(customer_id: int) -> bool:
    return db.session.get(SettlementRequest, customer_id) is not None


@bp.app_context_processor
def _open_invoices_panel_functions():
    def open_invoices_for_current_customer(limit: int = 5):
        if not current_user.is_authenticated:
            return []
        return list(
            db.session.scalars(
                select(Invoice)
                .where(Invoice.customer_id == current_user.id, Invoice.state == "open")
                .order_by(Invoice.issued_at, Invoice.id)
                .limit(limit)
            )
        )

    return {"open_invoices_for_current_customer": open_invoices_for_current_customer}


def _invoice_page(query, page: int) -> tuple[list[Invoice], int | None]:
    """One page of `query`'s invoices, newest first, with the total (None when the page is empty)."""
    result = db.session.execute(
        query.add_columns(func.count().over().label("total"))
        .order_by(Invoice.issued_at.desc(), Invoice.id.desc()).offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)
    ).all()
    return [invoice for invoice, _ in result], (int(result[0].total) if result else None)


@bp.get("/invoices")
@customer_required
def invoices():
    state = request.args.get("state", "")
    if state not in VISIBLE_STATES:
        state = ""
    query = select(Invoice).where(Invoice.customer_id == current_user.id, Invoice.state != "draft")
    if state:
        query = query.where(Invoice.state == state)
    # The page's rows with the number of every page's rows (a window count, one statement); only a
    # page number past the end costs a count and the last page.
    page = page_number(MAX_PAGE)
    rows, total = _invoice_page(query, page)
    if total is None:
        total = db.session.scalar(select(func.count()).select_from(query.subquery()))
        last = max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
        if page > last:
            page = last
            rows, _ = _invoice_page(query, page)
    return render_page_or_block(
        "customer/invoices.html", "invoice_list", invoices=rows, state=state, states=VISIBLE_STATES,
        page=page, pages=max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1), total=total,
    )


def _render_detail(invoice: Invoice, *, settling: bool, polls: int, after: int | None = None,
                   result: card_attempts.PayResult | None = None, **extra):
    """`after` (the newest card attempt when "Pay now" was clicked) rides along in the poll URL, so
    the fragment that finds the settlement finished reports its outcome in `result`."""
    return render_page_or_block(
        "customer/invoice_detail.html", "invoice_status", invoice=invoice, doc=invoice_document(db.session, invoice),
        settling=settling, polls=polls, after=after, result=result,
        attempts=card_attempts.invoice_attempts(db.session, invoice.id), **extra,
    )


def _outcome(invoice: Invoice, after: int, *, still_waiting: bool) -> card_attempts.PayResult:
    if still_waiting:
        return card_attempts.PayResult(
            "unconfirmed", "We are still working on this payment. The page does not need to stay open: we "
            "email you the outcome.", [])
    db.session.refresh(invoice)
    return card_attempts.pay_result(db.session, invoice, after_attempt_id=after)


def _visible_invoice(invoice_id: int) -> Invoice:
    invoice = owned_or_404(db.session, Invoice, invoice_id, current_user.id)
    if invoice.state == "draft":
        from flask import abort

        abort(404)
    return invoice


@bp.get("/invoices/<id:invoice_id>")
@customer_required
def invoice_detail(invoice_id: int):
    # the invoice (the customer's, not a draft, else 404) with its lines and whether a settlement
    # is waiting, in one statement (what _visible_invoice, invoice.lines and _settlement_waiting read)
    row = db.session.execute(
        select(Invoice, exists().where(SettlementRequest.customer_id == current_user.id))
        .options(joinedload(Invoice.lines))
        .where(Invoice.id == invoice_id, Invoice.customer_id == current_user.id, Invoice.state != "draft")
    ).unique().first()
    if row is None:
        abort(404)
    invoice, settling = row
    return _render_detail(invoice, settling=bool(settling), polls=0,
                          credit_notes=credit_notes_of_invoice(db.session, invoice.id))


@bp.post("/invoices/<id:invoice_id>/pay")
@customer_required
def pay_invoice(invoice_id: int):
    """Ask for settlement now. "Pay now" always ends with a message in place: the fragment polls
    while the settlement runs and shows the outcome (paid, or why not and what to do) as soon as it
    is reached — also when it is reached before the first poll."""
    invoice = _visible_invoice(invoice_id)
    after = card_attempts.last_attempt_id(db.session, invoice.id)
    if invoice.state == "open":
        request_settlement(db.session, current_user.id)
        db.session.commit()
    if not is_htmx():
        if invoice.state == "open":
            flash("Paying this invoice from your balance and cards…", "info")
        return redirect(url_for("customer.invoice_detail", invoice_id=invoice.id), 303)
    settling = invoice.state == "open" and _settlement_waiting(current_user.id)
    result = None if settling else _outcome(invoice, after, still_waiting=False)
    return _render_detail(invoice, settling=settling, polls=0, after=after, result=result)


@bp.get("/invoices/<id:invoice_id>/status")
@customer_required
def invoice_status(invoice_id: int):
    """The status fragment (state, amounts, payments, card attempts); keeps polling while a
    settlement is waiting. With `after` (a "Pay now" click) the final state carries its message,
    whichever poll reaches it first."""
    invoice = _visible_invoice(invoice_id)
    polls = min(max(request.args.get("polls", 0, type=int), 0), MAX_POLLS) + 1
    after = request.args.get("after", type=int)
    waiting = _settlement_waiting(current_user.id)
    settling = waiting and polls < MAX_POLLS
    result = None
    if not settling and after is not None:
        result = _outcome(invoice, max(after, 0), still_waiting=waiting)
    return _render_detail(invoice, settling=settling, polls=polls, after=after, result=result)


@bp.get("/invoices/<id:invoice_id>/pdf")
@customer_required
def invoice_pdf(invoice_id: int):
    invoice = _visible_invoice(invoice_id)
    return Response(
        render_invoice_pdf(invoice),
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="invoice-{invoice.number}.pdf"'},
    )


@bp.get("/credit-notes/<id:credit_note_id>/pdf")
@customer_required
def credit_note_pdf(credit_note_id: int):
    note = owned_or_404(db.session, CreditNote, credit_note_id, current_user.id)
    return Response(
        render_credit_note_pdf(note, db.session.get(Invoice, note.invoice_id)),
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="credit-note-{note.number}.pdf"'},
    )
