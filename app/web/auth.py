"""Sign up (with email verification), log in, log out, password reset, the account page.

Enumeration: sign-up and the reset request answer "check your inbox" whatever the email is;
login says "wrong email or password" for both. Throttles (app.billing.throttle) are keyed on the
typed email and the client address, never on whether an account exists, and answer 429 with
Retry-After. Per-account limits are far below the per-address ones, so one customer's failures
never lock out another customer behind the same address.
"""

from datetime import timedelta
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_limiter.util import get_remote_address
from flask_login import current_user, login_required, login_user, logout_user

from app import accounts
from app.billing.throttle import Throttle, retry_message
from app.extensions import db, limiter
from app.web.forms import (
    ChangePasswordForm,
    ConfirmForm,
    LoginForm,
    ResetPasswordForm,
    ResetRequestForm,
    SignupForm,
)
from jobs.mail import send_password_reset_email, send_verification_email
from jobs.queue import enqueue

bp = Blueprint("auth", __name__)

SESSION_KEY = "sid"
# Failures per typed email and per address (login, and a wrong current password on the account page).
LOGIN_FAILURE_LIMITS = {"account": "10 per 15 minutes", "ip": "100 per 15 minutes"}
# Every request counts: each may send an email.
SIGNUP_LIMITS = {"email": "5 per hour", "ip": "30 per hour"}
RESET_REQUEST_LIMITS = {"email": "5 per hour", "ip": "30 per hour"}
VERIFICATION_RESEND_LIMITS = {"account": "3 per hour"}
# A coarse flood guard per address on top (all attempts), far above what a household needs.
FLOOD_GUARD = "60 per minute"


def _throttle(namespace: str, limits: dict[str, str]) -> Throttle:
    return Throttle(limiter.storage, namespace, limits)


def login_throttle() -> Throttle:
    return _throttle("login-failures", LOGIN_FAILURE_LIMITS)


def _too_many(template: str, wait: int, **context):
    flash(retry_message(wait), "error")
    return render_template(template, **context), 429, {"Retry-After": str(wait)}


def session_limits() -> dict[str, timedelta]:
    cfg = current_app.config
    return {"idle_timeout": timedelta(minutes=cfg["SESSION_IDLE_MINUTES"]),
            "max_age": timedelta(hours=cfg["SESSION_MAX_HOURS"])}


def _home():
    return url_for("admin.index") if current_user.is_admin else url_for("customer.dashboard")


def _client() -> dict[str, str | None]:
    return {"user_agent": request.headers.get("User-Agent"), "ip_address": get_remote_address()}


def _start_session(user) -> None:
    """Log in with a fresh session: whatever the cookie held before is dropped (no fixation),
    and the new session id exists server-side so it can be ended from anywhere."""
    session.clear()
    login_user(user)
    session[SESSION_KEY] = accounts.start_session(db.session, user.id, **_client())


@bp.route("/")
def index():
    if current_user.is_authenticated:
        return redirect(_home())
    return redirect(url_for("auth.login"))


@bp.route("/signup", methods=["GET", "POST"])
@limiter.limit(FLOOD_GUARD, methods=["POST"])
def signup():
    form = SignupForm()
    if form.validate_on_submit():
        email = accounts.normalize_email(form.email.data)
        throttle = _throttle("signup", SIGNUP_LIMITS)
        keys = {"email": email, "ip": get_remote_address()}
        wait = throttle.retry_after_seconds(keys)
        if wait is not None:
            return _too_many("auth/signup.html", wait, form=form)
        try:
            outcome = accounts.sign_up(db.session, email, form.password.data, name=form.name.data or None)
        except accounts.WeakPassword as exc:
            form.password.errors.append(str(exc))
        else:
            throttle.record(keys)
            if outcome.verification_token is not None:
                enqueue(send_verification_email, outcome.user_id, outcome.verification_token)
            flash(f"Check your inbox: we sent a message to {email}. Open the link in it to finish signing up.", "info")
            return redirect(url_for("auth.login"), 303)
    if form.errors and form.password.data and not form.password.errors:
        # another field is wrong: say what is wrong with the password too, every error at once
        problem = accounts.password_problem(form.password.data, email=form.email.data or "", name=form.name.data)
        if problem:
            form.password.errors = [*form.password.errors, problem]
    return render_template("auth/signup.html", form=form), 400 if form.errors else 200


@bp.route("/verify-email/<token>", methods=["GET", "POST"])
@limiter.limit(FLOOD_GUARD, methods=["POST"])
def verify_email(token: str):
    """The mailed link opens a page with a button: a GET never changes anything (mail scanners
    open links), the POST uses the token."""
    form = ConfirmForm()
    if form.validate_on_submit():
        try:
            accounts.verify_email(db.session, token[:200])
        except accounts.InvalidVerificationToken:
            flash("This confirmation link is invalid, used or expired. Log in to get a new one.", "error")
            return redirect(url_for("auth.login"), 303)
        flash("Your email address is confirmed. Log in.", "success")
        return redirect(url_for("auth.login"), 303)
    return render_template("auth/verify_email.html", form=form, token=token)


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(FLOOD_GUARD, methods=["POST"])
def login():
    form = LoginForm()
    if form.validate_on_submit():
        throttle = login_throttle()
        keys = {"account": accounts.normalize_email(form.email.data), "ip": get_remote_address()}
        wait = throttle.retry_after_seconds(keys)
        if wait is not None:
            return _too_many("auth/login.html", wait, form=form)
        try:
            user = accounts.authenticate(db.session, form.email.data, form.password.data)
        except accounts.EmailNotVerified as exc:
            _resend_verification(exc.user.id)
            flash(f"Confirm your email address first: we sent a link to {exc.user.email}.", "error")
            return render_template("auth/login.html", form=form), 400
        if user is None:
            throttle.record(keys)
            flash("Wrong email or password.", "error")
            return render_template("auth/login.html", form=form), 400
        _start_session(user)
        target = request.args.get("next", "")
        if not target.startswith("/") or urlsplit(target).netloc or target.startswith("//") or "\\" in target:
            target = _home()
        return redirect(target, 303)
    return render_template("auth/login.html", form=form), 400 if form.errors else 200


def _resend_verification(user_id: int) -> None:
    throttle = _throttle("verification-resend", VERIFICATION_RESEND_LIMITS)
    keys = {"account": str(user_id)}
    if throttle.retry_after_seconds(keys) is not None:
        return
    token = accounts.resend_verification(db.session, user_id)
    if token is not None:
        throttle.record(keys)
        enqueue(send_verification_email, user_id, token)


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    """Ends every session of the account, here and on every other device (SPEC §14)."""
    accounts.end_all_sessions(db.session, current_user.id, reason="logout")
    logout_user()
    session.clear()
    flash("You are logged out on every device.", "info")
    return redirect(url_for("auth.login"), 303)


@bp.route("/password/forgot", methods=["GET", "POST"])
@limiter.limit(FLOOD_GUARD, methods=["POST"])
def forgot_password():
    form = ResetRequestForm()
    if form.validate_on_submit():
        email = accounts.normalize_email(form.email.data)
        throttle = _throttle("reset-request", RESET_REQUEST_LIMITS)
        keys = {"email": email, "ip": get_remote_address()}
        wait = throttle.retry_after_seconds(keys)
        if wait is not None:
            return _too_many("auth/forgot.html", wait, form=form)
        throttle.record(keys)
        created = accounts.create_reset_token(db.session, email)
        if created is not None:
            user, token = created
            enqueue(send_password_reset_email, user.id, token)
        flash(f"Check your inbox: if {email} has an account, we sent it a link to reset the password.", "info")
        return redirect(url_for("auth.login"), 303)
    return render_template("auth/forgot.html", form=form), 400 if form.errors else 200


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
@limiter.limit(FLOOD_GUARD, methods=["POST"])
def reset_password(token: str):
    form = ResetPasswordForm()
    token = token[:200]
    if form.validate_on_submit():
        try:
            user = accounts.reset_password(db.session, token, form.password.data)
        except accounts.InvalidResetToken:
            flash("This reset link is invalid, used or expired. Ask for a new one.", "error")
            return redirect(url_for("auth.forgot_password"), 303)
        except accounts.WeakPassword as exc:
            form.password.errors.append(str(exc))
        else:
            login_throttle().reset({"account": user.email})
            if current_user.is_authenticated:
                logout_user()
            session.clear()
            flash("Your password was changed and every session signed out. Log in with the new password.", "success")
            return redirect(url_for("auth.login"), 303)
    return render_template("auth/reset.html", form=form, token=token), 400 if form.errors else 200


# ----------------------------------------------------------------- account ---
def _render_account(password_form=None, status: int = 200):
    rows = accounts.active_sessions(db.session, current_user.id, **session_limits())
    token = session.get(SESSION_KEY)
    sessions = [(row, accounts.is_current_session(row, token)) for row in rows]
    return render_template(
        "auth/account.html", password_form=password_form or ChangePasswordForm(), sessions=sessions,
        end_form=ConfirmForm(),
    ), status


@bp.get("/account")
@login_required
def account():
    return _render_account()


@bp.post("/account/password")
@login_required
@limiter.limit(FLOOD_GUARD)
def change_password():
    form = ChangePasswordForm()
    if not form.validate_on_submit():
        return _render_account(form, 400)
    throttle = login_throttle()
    keys = {"account": current_user.email, "ip": get_remote_address()}
    wait = throttle.retry_after_seconds(keys)
    if wait is not None:
        form.current.errors.append(retry_message(wait))
        body, _ = _render_account(form)
        return body, 429, {"Retry-After": str(wait)}
    try:
        user = accounts.change_password(db.session, current_user.id, form.current.data, form.password.data,
                                        keep_token=session.get(SESSION_KEY))
    except accounts.WrongPassword:
        throttle.record(keys)
        form.current.errors.append("That is not your current password.")
        return _render_account(form, 400)
    except accounts.WeakPassword as exc:
        form.password.errors.append(str(exc))
        return _render_account(form, 400)
    session[SESSION_KEY] = accounts.rotate_session(db.session, user.id, session.get(SESSION_KEY), **_client())
    flash("Your password was changed. Every other session was signed out.", "success")
    return redirect(url_for("auth.account"), 303)


@bp.post("/account/sessions/<id:session_id>/end")
@login_required
def end_session(session_id: int):
    if not ConfirmForm().validate_on_submit():
        return _render_account(status=400)
    if not accounts.end_session_by_id(db.session, current_user.id, session_id, reason="ended_by_user"):
        flash("That session had already ended.", "info")
    else:
        flash("Session ended.", "success")
    return redirect(url_for("auth.account"), 303)


@bp.post("/account/sessions/end-others")
@login_required
def end_other_sessions():
    if not ConfirmForm().validate_on_submit():
        return _render_account(status=400)
    ended = accounts.end_all_sessions(db.session, current_user.id, reason="ended_by_user",
                                      except_token=session.get(SESSION_KEY))
    flash(f"Signed out {ended} other session{'s' if ended != 1 else ''}.", "success")
    return redirect(url_for("auth.account"), 303)
