"""Admin voucher pages (vouchers issue): create a voucher or a batch, list, disable.

Creating renders the new codes directly in the POST response (the only time they exist in
plaintext, see app.billing.vouchers), together with a CSV download built into that page.
A resubmitted form (same hidden request_key) creates nothing and says so.
"""

import secrets
from datetime import UTC, datetime, time, timedelta

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import DateField, HiddenField, IntegerField, StringField
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from app.billing import vouchers as voucher_service
from app.billing.money import InvalidAmount
from app.billing.money_input import configured_max_cents, parse_money_cents
from app.billing.periods import InvalidPeriod, check_date
from app.extensions import db
from app.web.admin import bp
from app.web.helpers import admin_required, id_from_text, is_htmx, render_flashes_oob


class VoucherBatchForm(FlaskForm):
    count = IntegerField(
        "Number of codes",
        default=1,
        validators=[
            InputRequired(message="Enter how many codes to create."),
            NumberRange(1, voucher_service.MAX_BATCH, message=f"Between 1 and {voucher_service.MAX_BATCH}."),
        ],
    )
    value = StringField("Value", validators=[DataRequired(message="Enter a value.")])
    valid_until = DateField("Valid until (inclusive, UTC)", validators=[Optional()])
    max_redemptions = IntegerField(
        "Max redemptions per code",
        default=1,
        validators=[
            InputRequired(message="Enter how often each code may be redeemed."),
            NumberRange(1, voucher_service.MAX_REDEMPTIONS, message="At least 1."),
        ],
    )
    note = StringField("Note", validators=[Length(max=500)])
    request_key = HiddenField(validators=[Length(max=64, message="This form is out of date; reload the page.")])


def _render_index(form: VoucherBatchForm, status: int = 200):
    if not form.request_key.data:
        form.request_key.data = secrets.token_urlsafe(24)
    batch_id = id_from_text(request.args.get("batch"))
    vouchers = voucher_service.list_vouchers(db.session, batch_id=batch_id)
    return render_template("admin/vouchers.html", form=form, vouchers=vouchers, batch_id=batch_id), status


@bp.get("/vouchers")
@admin_required
def vouchers():
    return _render_index(VoucherBatchForm())


@bp.post("/vouchers")
@admin_required
def create_vouchers():
    form = VoucherBatchForm()
    valid = form.validate_on_submit()
    value_cents = None
    if form.value.data:  # parsed even when another field is wrong: every field's errors at once
        try:
            value_cents = parse_money_cents(form.value.data, min_cents=1,
                                            max_cents=configured_max_cents("VOUCHER_VALUE_MAX_CENTS", 100_000))
        except InvalidAmount as exc:
            form.value.errors = [*form.value.errors, str(exc)]
    if not valid or value_cents is None:
        return _render_index(form, 400)
    expires_at = None
    if form.valid_until.data:
        try:
            check_date(form.valid_until.data, "The expiry date")
        except InvalidPeriod as exc:
            form.valid_until.errors.append(str(exc))
            return _render_index(form, 400)
        expires_at = datetime.combine(form.valid_until.data + timedelta(days=1), time.min, tzinfo=UTC)
    try:
        created = voucher_service.create_voucher_batch(
            db.session,
            actor_id=current_user.id,
            count=form.count.data,
            value_cents=value_cents,
            max_redemptions=form.max_redemptions.data,
            expires_at=expires_at,
            note=form.note.data,
            request_key=form.request_key.data or secrets.token_urlsafe(24),
        )
    except voucher_service.InvalidVoucherBatch as exc:
        form.value.errors.append(str(exc))
        return _render_index(form, 400)
    if not created.created:
        flash("This batch was already created; its codes are shown only once.", "info")
        return redirect(url_for("admin.vouchers", batch=created.batch.id), 303)
    return render_template(
        "admin/vouchers_created.html",
        created=created,
        csv_url=voucher_service.codes_csv_data_url(created),
        csv_name=f"vouchers-batch-{created.batch.id}.csv",
    ), 201


@bp.post("/vouchers/<id:voucher_id>/disable")
@admin_required
def disable_voucher(voucher_id: int):
    try:
        voucher = voucher_service.disable_voucher(db.session, actor_id=current_user.id, voucher_id=voucher_id)
    except LookupError:
        abort(404)
    flash(f"Voucher {voucher.display_code} disabled.", "success")
    if is_htmx():
        return render_template("admin/_voucher_row.html", voucher=voucher) + render_flashes_oob()
    return redirect(url_for("admin.vouchers"), 303)
