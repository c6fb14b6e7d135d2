"""Sign up, log in, log out, password reset."""

from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

from app import accounts
from app.extensions import db, limiter
from app.web.forms import LoginForm, ResetPasswordForm, ResetRequestForm, SignupForm
from jobs.mail import send_password_reset_email
from jobs.queue import enqueue

bp = Blueprint("auth", __name__)


def _home():
    return url_for("admin.index") if current_user.is_admin else url_for("customer.dashboard")


@bp.route("/")
def index():
    if current_user.is_authenticated:
        return redirect(_home())
    return redirect(url_for("auth.login"))


@bp.route("/signup", methods=["GET", "POST"])
@limiter.limit("20 per hour", methods=["POST"])
def signup():
    form = SignupForm()
    if form.validate_on_submit():
        try:
            user = accounts.create_user(db.session, form.email.data, form.password.data, name=form.name.data or None)
        except accounts.EmailTaken:
            form.email.errors.append("An account with this email already exists. Log in or reset your password.")
        else:
            login_user(user)
            flash("Welcome to Paydesk.", "success")
            return redirect(url_for("customer.dashboard"), 303)
    return render_template("auth/signup.html", form=form), 400 if form.errors else 200


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit("10 per minute;50 per hour", methods=["POST"])
def login():
    form = LoginForm()
    if form.validate_on_submit():
        user = accounts.authenticate(db.session, form.email.data, form.password.data)
        if user is None:
            flash("Wrong email or password.", "error")
            return render_template("auth/login.html", form=form), 400
        login_user(user)
        target = request.args.get("next", "")
        if not target.startswith("/") or urlsplit(target).netloc or target.startswith("//"):
            target = _home()
        return redirect(target, 303)
    return render_template("auth/login.html", form=form), 400 if form.errors else 200


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"), 303)


@bp.route("/password/forgot", methods=["GET", "POST"])
@limiter.limit("5 per minute;20 per hour", methods=["POST"])
def forgot_password():
    form = ResetRequestForm()
    if form.validate_on_submit():
        created = accounts.create_reset_token(db.session, form.email.data)
        if created is not None:
            user, token = created
            enqueue(send_password_reset_email, user.id, token)
        flash("If an account exists for that address, we sent a link to reset its password.", "info")
        return redirect(url_for("auth.login"), 303)
    return render_template("auth/forgot.html", form=form)


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
@limiter.limit("10 per minute", methods=["POST"])
def reset_password(token: str):
    form = ResetPasswordForm()
    if form.validate_on_submit():
        try:
            accounts.reset_password(db.session, token, form.password.data)
        except accounts.InvalidResetToken:
            flash("This reset link is invalid, used or expired. Ask for a new one.", "error")
            return redirect(url_for("auth.forgot_password"), 303)
        flash("Your password was changed. Log in with the new one.", "success")
        return redirect(url_for("auth.login"), 303)
    return render_template("auth/reset.html", form=form, token=token)
