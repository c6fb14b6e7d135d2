"""Account security over HTTP (issue 15, ASVS L2 V2/V3): revocable sessions, reset tokens,
password strength and re-hashing, throttles per account and per address, no account enumeration."""

import re
from datetime import timedelta

import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select, update

from app import accounts
from app.models import AuditLog, PasswordResetToken, User, UserSession
from app.models.base import utcnow
from tests.conftest import get_csrf, login

pytestmark = pytest.mark.integration

PASSWORD = "correct-horse-battery"
NEW_PASSWORD = "velvet-harbour-cactus-91"


def captured_cookie(client) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def client_with_cookie(app, value: str, ip: str = "127.0.0.1"):
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = ip
    other.set_cookie("session", value)
    return other


def logged_in(app, email: str, password: str = PASSWORD, *, ip: str = "127.0.0.1", user_agent: str | None = None):
    c = app.test_client()
    c.environ_base["REMOTE_ADDR"] = ip
    if user_agent:
        c.environ_base["HTTP_USER_AGENT"] = user_agent
    login(c, email, password)
    return c


def opens_dashboard(c) -> bool:
    response = c.get("/dashboard")
    assert response.status_code in (200, 302)
    return response.status_code == 200


def post_form(c, path: str, data: dict | None = None, page: str = "/account"):
    return c.post(path, data={**(data or {}), "csrf_token": get_csrf(c, page)})


def _link_path(msg, marker: str) -> str:
    body = msg.get_body(("plain",)).get_content()
    link = next(word for word in body.split() if marker in word)
    return "/" + link.split("127.0.0.1", 1)[1].split("/", 1)[1]


# ---------------------------------------------------------------- sessions ---
def test_a_cookie_captured_before_logout_is_refused_afterwards(app, factory):
    factory.customer(email="a@example.com")
    browser = logged_in(app, "a@example.com")
    stolen = captured_cookie(browser)
    assert opens_dashboard(client_with_cookie(app, stolen))

    assert post_form(browser, "/logout", page="/dashboard").status_code == 303

    assert not opens_dashboard(client_with_cookie(app, stolen))
    assert not opens_dashboard(browser)


def test_logout_ends_the_sessions_on_every_other_device_too(app, factory):
    factory.customer(email="a@example.com")
    laptop, phone = logged_in(app, "a@example.com"), logged_in(app, "a@example.com")
    post_form(laptop, "/logout", page="/dashboard")
    assert not opens_dashboard(phone)


def test_a_cookie_captured_before_a_password_change_is_refused_afterwards(app, session, factory):
    factory.customer(email="a@example.com")
    browser = logged_in(app, "a@example.com")
    phone = logged_in(app, "a@example.com")
    stolen = captured_cookie(browser)

    response = post_form(browser, "/account/password",
                         {"current": PASSWORD, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert response.status_code == 303

    assert not opens_dashboard(client_with_cookie(app, stolen))  # the old session id was rotated away
    assert not opens_dashboard(phone)  # every other session ended
    assert opens_dashboard(browser)  # the browser that changed it keeps going with a new id
    assert captured_cookie(browser) != stolen
    login(app.test_client(), "a@example.com", NEW_PASSWORD)


def test_a_cookie_captured_before_a_reset_is_refused_afterwards(app, client, factory, worker, mailbox):
    factory.customer(email="a@example.com")
    browser = logged_in(app, "a@example.com")
    stolen = captured_cookie(browser)

    client.post("/password/forgot", data={"email": "a@example.com", "csrf_token": get_csrf(client, "/password/forgot")})
    worker.run_burst()
    path = _link_path(mailbox.wait_for(1)[0], "/password/reset/")
    done = client.post(path, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD, "csrf_token": get_csrf(client, path)})
    assert done.status_code == 303

    assert not opens_dashboard(client_with_cookie(app, stolen))
    assert not opens_dashboard(browser)
    login(app.test_client(), "a@example.com", NEW_PASSWORD)


def test_an_admin_signs_a_customer_out_everywhere_and_it_is_audited(app, session, factory):
    customer = factory.customer(email="a@example.com")
    other = factory.customer(email="b@example.com")
    factory.admin(email="boss@example.com", password="boss-password-long-1")
    devices = [logged_in(app, "a@example.com") for _ in range(2)]
    bystander = logged_in(app, "b@example.com")
    admin = logged_in(app, "boss@example.com", "boss-password-long-1")
    page = f"/admin/customers/{customer.id}"
    assert "Sign out everywhere" in admin.get(page).get_data(as_text=True)

    response = post_form(admin, f"/admin/customers/{customer.id}/sessions/end", page=page)

    assert response.status_code == 303
    assert not any(opens_dashboard(d) for d in devices)
    assert opens_dashboard(bystander)
    entry = session.scalar(select(AuditLog).where(AuditLog.action == "customer.sessions_ended"))
    assert entry.target_id == str(customer.id) and entry.after == {"ended": 2}
    assert other.id != customer.id


def test_customers_cannot_sign_out_someone_else(app, factory):
    victim = factory.customer(email="victim@example.com")
    factory.customer(email="a@example.com")
    victim_browser = logged_in(app, "victim@example.com")
    attacker = logged_in(app, "a@example.com")
    assert post_form(attacker, f"/admin/customers/{victim.id}/sessions/end").status_code == 403
    theirs = attacker.post("/account/sessions/1/end", data={"csrf_token": get_csrf(attacker, "/account")})
    assert theirs.status_code == 303
    assert opens_dashboard(victim_browser)


def test_the_session_id_rotates_at_login_and_nothing_from_before_survives(app, factory):
    factory.customer(email="a@example.com")
    c = app.test_client()
    with c.session_transaction() as s:
        s["planted"] = "by-an-attacker"
        s["sid"] = "guessed-session-id"
    login(c, "a@example.com")
    with c.session_transaction() as s:
        first = s["sid"]
        assert "planted" not in s and first != "guessed-session-id"
    login(c, "a@example.com")
    with c.session_transaction() as s:
        assert s["sid"] != first


def test_the_account_page_lists_active_sessions_and_ends_one(app, session, factory):
    customer = factory.customer(email="a@example.com")
    firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    iphone = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
              "Version/17.0 Mobile/15E148 Safari/604.1")
    laptop = logged_in(app, "a@example.com", ip="198.51.100.7", user_agent=firefox)
    phone = logged_in(app, "a@example.com", ip="203.0.113.9", user_agent=iphone)

    page = laptop.get("/account").get_data(as_text=True)
    assert "Firefox on Linux" in page and "Mobile Safari on iOS" in page
    assert "198.51.100.7" in page and "203.0.113.9" in page
    assert page.count('class="session-row"') == 2 and "this device" in page

    phone_session = session.scalar(select(UserSession.id).where(UserSession.ip_address == "203.0.113.9"))
    assert post_form(laptop, f"/account/sessions/{phone_session}/end").status_code == 303
    assert not opens_dashboard(phone)
    assert opens_dashboard(laptop)
    assert laptop.get("/account").get_data(as_text=True).count('class="session-row"') == 1
    assert customer.id


def test_sign_out_every_other_session_keeps_this_one(app, factory):
    factory.customer(email="a@example.com")
    here = logged_in(app, "a@example.com")
    others = [logged_in(app, "a@example.com") for _ in range(2)]
    response = post_form(here, "/account/sessions/end-others")
    assert response.status_code == 303
    assert "Signed out 2 other sessions." in here.get("/account").get_data(as_text=True)
    assert not any(opens_dashboard(o) for o in others)
    assert opens_dashboard(here)


def test_an_idle_session_ends_and_last_seen_moves_at_most_once_a_minute(app, session, factory):
    factory.customer(email="a@example.com")
    c = logged_in(app, "a@example.com")
    row = session.scalar(select(UserSession))
    first_seen = row.last_seen_at
    assert opens_dashboard(c)
    session.expire_all()
    assert session.scalar(select(UserSession.last_seen_at)) == first_seen  # no write within the minute

    session.execute(update(UserSession).values(last_seen_at=utcnow() - timedelta(minutes=2)))
    session.commit()
    assert opens_dashboard(c)
    session.expire_all()
    assert session.scalar(select(UserSession.last_seen_at)) > utcnow() - timedelta(seconds=30)

    session.execute(update(UserSession).values(last_seen_at=utcnow() - timedelta(minutes=31)))
    session.commit()
    assert not opens_dashboard(c)


def test_a_session_older_than_the_absolute_limit_ends_even_when_busy(app, session, factory):
    factory.customer(email="a@example.com")
    c = logged_in(app, "a@example.com")
    session.execute(update(UserSession).values(created_at=utcnow() - timedelta(hours=12, minutes=1)))
    session.commit()
    assert not opens_dashboard(c)


# ------------------------------------------------------------------ tokens ---
def _reset(client, token: str, password: str = NEW_PASSWORD):
    path = f"/password/reset/{token}"
    return client.post(path, data={"password": password, "confirm": password, "csrf_token": get_csrf(client, path)})


def test_t1_dies_when_t2_is_issued(client, session, factory):
    factory.customer(email="a@example.com")
    _, t1 = accounts.create_reset_token(session, "a@example.com")
    _, t2 = accounts.create_reset_token(session, "a@example.com")

    refused = _reset(client, t1)
    assert refused.headers["Location"].endswith("/password/forgot")
    login(client, "a@example.com", PASSWORD)  # T1 changed nothing

    assert _reset(client, t2).headers["Location"].endswith("/login")
    login(client, "a@example.com", NEW_PASSWORD)
    assert _reset(client, t2, "another-velvet-harbour-7").headers["Location"].endswith("/password/forgot")


def test_using_a_token_or_changing_the_password_voids_every_outstanding_token(app, client, session, factory):
    factory.customer(email="a@example.com")
    _, token = accounts.create_reset_token(session, "a@example.com")
    browser = logged_in(app, "a@example.com")
    post_form(browser, "/account/password", {"current": PASSWORD, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert _reset(client, token, "another-velvet-harbour-7").headers["Location"].endswith("/password/forgot")
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(PasswordResetToken)
                          .where(PasswordResetToken.used_at.is_(None))) == 0


def test_reset_tokens_are_stored_hashed_and_live_one_hour(session, factory):
    factory.customer(email="a@example.com")
    _, token = accounts.create_reset_token(session, "a@example.com")
    row = session.scalar(select(PasswordResetToken))
    assert token not in row.token_hash and len(row.token_hash) == 64
    assert timedelta(minutes=59) < row.expires_at - row.created_at <= timedelta(hours=1)


# --------------------------------------------------------------- passwords ---
WEAK = ["aaaaaaaaaaaa", "123456789012", "password1234", "qwertyuiopas", "a@example.com-1"]


@pytest.mark.parametrize("weak", WEAK)
def test_weak_passwords_are_refused_with_a_message_on_change_and_reset(app, client, session, factory, weak):
    factory.customer(email="a@example.com")
    browser = logged_in(app, "a@example.com")
    response = post_form(browser, "/account/password", {"current": PASSWORD, "password": weak, "confirm": weak})
    assert response.status_code == 400
    assert "This password is too easy to guess." in response.get_data(as_text=True)

    _, token = accounts.create_reset_token(session, "a@example.com")
    response = _reset(client, token, weak)
    assert response.status_code == 400
    assert "This password is too easy to guess." in response.get_data(as_text=True)
    login(app.test_client(), "a@example.com", PASSWORD)  # nothing changed
    assert _reset(client, token).status_code == 303  # the token survived the refused password


def test_a_wrong_current_password_changes_nothing_and_counts_as_a_failed_login(app, factory):
    factory.customer(email="a@example.com")
    browser = logged_in(app, "a@example.com")
    response = post_form(browser, "/account/password", {"current": "not-my-password", "password": NEW_PASSWORD,
                                                         "confirm": NEW_PASSWORD})
    assert response.status_code == 400
    assert "That is not your current password." in response.get_data(as_text=True)
    login(app.test_client(), "a@example.com", PASSWORD)


def test_argon2_parameters_are_upgraded_at_login(app, session, factory):
    customer = factory.customer(email="a@example.com")
    weak_hash = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    session.execute(update(User).where(User.id == customer.id).values(password_hash=weak_hash))
    session.commit()

    logged_in(app, "a@example.com")

    session.expire_all()
    upgraded = session.get(User, customer.id).password_hash
    assert upgraded != weak_hash and not PasswordHasher().check_needs_rehash(upgraded)
    logged_in(app, "a@example.com")


def test_create_admin_refuses_a_weak_password(app, session):
    result = app.test_cli_runner().invoke(args=["create-admin", "--email", "boss@example.com", "--password", "password1234"])
    assert result.exit_code != 0 and "too easy to guess" in result.output
    assert session.scalar(select(func.count(User.id))) == 0


# --------------------------------------------------------------- throttles ---
def _fail_login(c, email: str):
    return c.post("/login", data={"email": email, "password": "wrong-password", "csrf_token": get_csrf(c, "/login")})


def test_a_customers_failed_logins_do_not_lock_out_another_customer_at_the_same_address(app, factory):
    factory.customer(email="a@example.com")
    factory.customer(email="b@example.com")
    a = app.test_client()
    a.environ_base["REMOTE_ADDR"] = "192.0.2.10"
    for _ in range(10):
        assert _fail_login(a, "a@example.com").status_code == 400
    locked = a.post("/login", data={"email": "a@example.com", "password": PASSWORD, "csrf_token": get_csrf(a, "/login")})
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0

    b = logged_in(app, "b@example.com", ip="192.0.2.10")
    assert opens_dashboard(b)


def test_failed_logins_for_one_account_from_many_addresses_are_limited(app, factory):
    factory.customer(email="a@example.com")
    for n in range(10):
        c = app.test_client()
        c.environ_base["REMOTE_ADDR"] = f"198.51.100.{n + 1}"
        assert _fail_login(c, "a@example.com").status_code == 400
    fresh = app.test_client()
    fresh.environ_base["REMOTE_ADDR"] = "203.0.113.50"
    response = fresh.post("/login", data={"email": "a@example.com", "password": PASSWORD,
                                          "csrf_token": get_csrf(fresh, "/login")})
    assert response.status_code == 429 and "Retry-After" in response.headers


def test_a_lockout_looks_the_same_whether_or_not_the_account_exists(app, factory):
    factory.customer(email="real@example.com")
    answers = {}
    for email in ("real@example.com", "ghost@example.com"):
        c = app.test_client()
        statuses = [_fail_login(c, email).status_code for _ in range(11)]
        last = _fail_login(c, email)
        answers[email] = (statuses, last.status_code, "Too many attempts" in last.get_data(as_text=True),
                          int(last.headers["Retry-After"]) > 14 * 60)
    assert answers["real@example.com"] == answers["ghost@example.com"]
    assert answers["ghost@example.com"][0] == [400] * 10 + [429]


def test_a_successful_reset_clears_the_accounts_login_lockout(app, client, session, factory):
    factory.customer(email="a@example.com")
    for _ in range(10):
        _fail_login(client, "a@example.com")
    _, token = accounts.create_reset_token(session, "a@example.com")
    assert _reset(client, token).status_code == 303
    login(app.test_client(), "a@example.com", NEW_PASSWORD)


def test_reset_requests_are_throttled_per_email_with_retry_after_and_the_same_for_unknown_emails(app):
    for email in ("someone@example.com", "nobody@example.com"):
        c = app.test_client()
        statuses = [
            c.post("/password/forgot", data={"email": email, "csrf_token": get_csrf(c, "/password/forgot")}).status_code
            for _ in range(6)
        ]
        assert statuses == [303] * 5 + [429]
    c = app.test_client()
    last = c.post("/password/forgot", data={"email": "someone@example.com", "csrf_token": get_csrf(c, "/password/forgot")})
    assert last.status_code == 429 and int(last.headers["Retry-After"]) > 0


def test_sign_ups_are_throttled_per_email_with_retry_after(app):
    c = app.test_client()
    statuses = []
    for _ in range(6):
        statuses.append(c.post("/signup", data={
            "email": "flood@example.com", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD,
            "csrf_token": get_csrf(c, "/signup"),
        }).status_code)
    assert statuses == [303] * 5 + [429]


# ------------------------------------------------------------- enumeration ---
def _without_tokens(html: str, email: str) -> str:
    html = re.sub(r'name="csrf_token" type="hidden" value="[^"]+"', "CSRF", html)
    html = re.sub(r'"X-CSRFToken": "[^"]+"', "CSRF", html)
    return html.replace(email, "EMAIL")


def _sign_up(c, email: str):
    return c.post("/signup", data={"email": email, "name": "", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD,
                                   "csrf_token": get_csrf(c, "/signup")})


def test_sign_up_of_an_existing_email_answers_like_a_new_one_and_mails_the_owner(app, session, factory, worker, mailbox):
    owner = factory.customer(email="taken@example.com")
    hash_before = owner.password_hash

    def answer(email):
        c = app.test_client()
        response = _sign_up(c, email)
        page = c.get(response.headers["Location"]).get_data(as_text=True)
        return response.status_code, response.headers["Location"], _without_tokens(page, email)

    assert answer("Taken@Example.com".lower()) == answer("fresh@example.com")

    worker.run_burst()
    messages = {m["To"]: m for m in mailbox.wait_for(2)}
    assert set(messages) == {"taken@example.com", "fresh@example.com"}
    notice = messages["taken@example.com"].get_body(("plain",)).get_content()
    assert "Someone tried to create a new Paydesk account with your email address" in notice
    assert "/verify-email/" not in notice
    assert "/verify-email/" in messages["fresh@example.com"].get_body(("plain",)).get_content()
    session.expire_all()
    assert session.get(User, owner.id).password_hash == hash_before  # the owner's account is untouched
    assert session.scalar(select(func.count(User.id))) == 2


def test_a_reset_request_answers_the_same_for_known_and_unknown_emails(app, factory):
    factory.customer(email="known@example.com")

    def answer(email):
        c = app.test_client()
        response = c.post("/password/forgot", data={"email": email, "csrf_token": get_csrf(c, "/password/forgot")})
        return response.status_code, response.headers["Location"], _without_tokens(c.get("/login").get_data(as_text=True), email)

    assert answer("known@example.com") == answer("unknown@example.com")


def test_a_squatters_unverified_sign_up_cannot_take_the_account(app, session, worker, mailbox):
    squatter, owner = app.test_client(), app.test_client()
    _sign_up(squatter, "victim@example.com")
    owner.post("/signup", data={"email": "victim@example.com", "password": "owners-own-secret-77",
                                "confirm": "owners-own-secret-77", "csrf_token": get_csrf(owner, "/signup")})
    worker.run_burst()
    first, latest = (_link_path(m, "/verify-email/") for m in mailbox.wait_for(2))
    stale = owner.post(first, data={"csrf_token": get_csrf(owner, first)})
    assert stale.headers["Location"].endswith("/login")
    session.expire_all()
    assert session.scalar(select(User.email_verified_at)) is None  # the squatter's link died
    owner.post(latest, data={"csrf_token": get_csrf(owner, latest)})
    login(owner, "victim@example.com", "owners-own-secret-77")
    refused = squatter.post("/login", data={"email": "victim@example.com", "password": NEW_PASSWORD,
                                            "csrf_token": get_csrf(squatter, "/login")})
    assert refused.status_code == 400


def test_a_password_change_is_announced_to_the_owner_by_email(app, factory, worker, mailbox):
    factory.customer(email="a@example.com")
    browser = logged_in(app, "a@example.com")
    post_form(browser, "/account/password", {"current": PASSWORD, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    worker.run_burst()
    [msg] = mailbox.wait_for(1)
    assert msg["To"] == "a@example.com" and msg["Subject"] == "Your Paydesk password was changed"
    assert "/password/forgot" in msg.get_body(("plain",)).get_content()
    # through the notifications outbox, written in the password change's own transaction
    with app.app_context():
        from app.extensions import db
        from app.models.notification import Notification

        assert db.session.scalar(select(Notification.status).where(Notification.kind == "password_changed")) == "sent"


def test_the_session_cookie_is_httponly_and_samesite_and_carries_no_password(app, factory):
    factory.customer(email="a@example.com")
    c = app.test_client()
    response = c.post("/login", data={"email": "a@example.com", "password": PASSWORD, "csrf_token": get_csrf(c, "/login")})
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert PASSWORD not in cookie and "a@example.com" not in response.headers["Location"]
    with c.session_transaction() as s:
        assert len(s["sid"]) >= 43  # 256 random bits from `secrets`


def test_pages_escape_what_customers_typed(app, factory):
    hostile = '<script>alert("x")</script>'
    customer = factory.customer(email="a@example.com", name=hostile, company='"><img src=x onerror=alert(1)>')
    factory.admin(email="boss@example.com", password="boss-password-long-1")
    pages = [logged_in(app, "a@example.com").get("/dashboard")]
    admin = logged_in(app, "boss@example.com", "boss-password-long-1")
    pages += [admin.get("/admin/customers"), admin.get(f"/admin/customers/{customer.id}")]
    for page in pages:
        html = page.get_data(as_text=True)
        assert page.status_code == 200
        assert hostile not in html and "<img src=x" not in html
        assert "&lt;script&gt;" in html


def test_the_per_address_flood_guard_answers_429_with_retry_after(app):
    c = app.test_client()
    c.environ_base["REMOTE_ADDR"] = "198.51.100.99"
    token = get_csrf(c, "/login")
    statuses = [
        c.post("/login", data={"email": f"guess{n}@example.com", "password": "wrong-password", "csrf_token": token})
        for n in range(61)
    ]
    assert [r.status_code for r in statuses[:60]] == [400] * 60
    assert statuses[60].status_code == 429 and 0 < int(statuses[60].headers["Retry-After"]) <= 60
    # another address is not affected
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "198.51.100.100"
    assert _fail_login(other, "guess0@example.com").status_code == 400
