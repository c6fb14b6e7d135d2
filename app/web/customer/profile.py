"""The customer's billing profile page: who invoices are made out to."""

from flask import flash, redirect, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import SelectField, StringField, TextAreaField

from app.billing.profile import LIMITS, BillingProfile, InvalidProfile, countries, update_billing_profile
from app.extensions import db
from app.web.customer import bp
from app.web.helpers import customer_required, render_page_or_block

FIELDS = ("name", "company", "address", "postcode", "city", "country", "vat_id")


class ProfileForm(FlaskForm):
    # Lengths and the VAT ID are checked by app.billing.profile, which reports every field at once;
    # the form caps what it accepts so a huge body is refused before parsing.
    name = StringField("Name", render_kw={"maxlength": LIMITS["name"]})
    company = StringField("Company", render_kw={"maxlength": LIMITS["company"]})
    address = TextAreaField("Street address", render_kw={"maxlength": LIMITS["address"], "rows": 2})
    postcode = StringField("Postcode", render_kw={"maxlength": LIMITS["postcode"]})
    city = StringField("City", render_kw={"maxlength": LIMITS["city"]})
    country = SelectField("Country", validate_choice=False)
    vat_id = StringField("VAT ID", render_kw={"maxlength": LIMITS["vat_id"]},
                         description="EU VAT ID with its country prefix, e.g. DE123456789. Leave empty if you have none.")


def _form(**kwargs) -> ProfileForm:
    form = ProfileForm(**kwargs)
    form.country.choices = [("", "Choose a country")] + list(countries())
    return form


def _render(form: ProfileForm, status: int = 200):
    return render_page_or_block("customer/profile.html", "profile_form", form=form), status


@bp.get("/profile")
@customer_required
def profile():
    current = BillingProfile.of(current_user)
    return _render(_form(data={key: getattr(current, key) for key in FIELDS}))


@bp.post("/profile")
@customer_required
def update_profile():
    form = _form()
    if not form.validate_on_submit():
        return _render(form, 400)
    submitted = BillingProfile(**{key: (getattr(form, key).data or "")[: LIMITS[key] * 4] for key in FIELDS})
    try:
        update_billing_profile(db.session, current_user.id, submitted)
    except InvalidProfile as exc:
        for key, message in exc.errors.items():
            getattr(form, key).errors = [*getattr(form, key).errors, message]
        return _render(form, 400)
    flash("Billing profile saved. Invoices issued from now on carry it; issued invoices do not change.", "success")
    return redirect(url_for("customer.profile"), 303)
