from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from app.models import PasswordResetToken, User
from app.models.base import utcnow
from tests.conftest import get_csrf, login

pytestmark = pytest.mark.integration


def _signup(client, **fields):
    data = {"email": "new@example.com", "name": "New", "password": "a-long-password", "confirm": "a-long-password"}
    data.update(fields)
    data["csrf_token"] = get_csrf(client, "/signup")
    return client.post("/signup", data=data)


def _user_count(session) -> int:
    return session.scalar(select(func.count(User.id)))


def _link_in(msg, marker: str) -> str:
    body = msg.get_body(("plain",)).get_content()
    link = next(word for word in body.split() if marker in word)
    return "/" + link.split("127.0.0.1", 1)[1].split("/", 1)[1]


def test_signup_creates_an_unverified_account_that_logs_in_after_the_emailed_link(client, session, worker, mailbox):
    response = _signup(client)
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/login")
    assert "Check your inbox" in client.get("/login").get_data(as_text=True)
    user = session.scalar(select(User).where(User.email == "new@example.com"))
    assert user is not None and not user.is_admin and user.email_verified_at is None
    assert user.password_hash.startswith("$argon2")

    # no login before the email is confirmed (and only the password's owner learns why)
    token = get_csrf(client, "/login")
    refused = client.post("/login", data={"email": "new@example.com", "password": "a-long-password", "csrf_token": token})
    assert refused.status_code == 400
    assert "Confirm your email address first" in refused.get_data(as_text=True)
    assert client.get("/dashboard").status_code == 302

    worker.run_burst()
    messages = mailbox.wait_for(2)  # the sign-up link, and a fresh one sent by the refused login
    assert {m["To"] for m in messages} == {"new@example.com"}
    first, latest = (_link_in(m, "/verify-email/") for m in messages)
    assert client.get(first).status_code == 200  # a GET only shows the button
    stale = client.post(first, data={"csrf_token": get_csrf(client, first)})
    assert stale.headers["Location"].endswith("/login")  # the newer link replaced it
    session.expire_all()
    assert session.get(User, user.id).email_verified_at is None

    confirmed = client.post(latest, data={"csrf_token": get_csrf(client, latest)})
    assert confirmed.status_code == 303
    assert "Your email address is confirmed" in client.get("/login").get_data(as_text=True)
    login(client, "new@example.com", "a-long-password")
    assert "new@example.com" in client.get("/dashboard").get_data(as_text=True)
    again = client.post(latest, data={"csrf_token": get_csrf(client, latest)})
    assert "invalid, used or expired" in client.get(again.headers["Location"]).get_data(as_text=True)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"email": "not-an-email"}, "Enter a valid email address."),
        ({"password": "short", "confirm": "short"}, "Use at least 12 characters (and at most 128)."),
        ({"confirm": "something-else"}, "Passwords do not match."),
        ({"password": "aaaaaaaaaaaaaaaa", "confirm": "aaaaaaaaaaaaaaaa"}, "This password is too easy to guess."),
    ],
)
def test_signup_refuses_bad_input_and_writes_nothing(client, session, fields, message):
    response = _signup(client, **fields)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert _user_count(session) == 0


def test_login_wrong_password_is_refused(client, factory):
    factory.customer(email="a@example.com")
    token = get_csrf(client)
    response = client.post("/login", data={"email": "a@example.com", "password": "wrong-password", "csrf_token": token})
    assert response.status_code == 400
    assert "Wrong email or password." in response.get_data(as_text=True)
    assert client.get("/dashboard").status_code == 302


def test_login_is_throttled_after_ten_failures_for_one_account(client, factory):
    factory.customer(email="a@example.com")
    token = get_csrf(client)
    statuses = [
        client.post("/login", data={"email": "a@example.com", "password": "wrong", "csrf_token": token}).status_code
        for _ in range(11)
    ]
    assert statuses[:10] == [400] * 10
    assert statuses[10] == 429
    # even the right password is refused while throttled, and the answer says when to come back
    right = client.post("/login", data={"email": "a@example.com", "password": "correct-horse-battery", "csrf_token": token})
    assert right.status_code == 429
    assert 0 < int(right.headers["Retry-After"]) <= 15 * 60
    assert "Too many attempts. Try again in 15 minutes." in right.get_data(as_text=True)


def test_logout_requires_post_and_ends_the_session(client, factory):
    factory.customer(email="a@example.com")
    login(client, "a@example.com")
    assert client.get("/logout").status_code == 405
    token = get_csrf(client, "/dashboard")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    assert client.get("/dashboard").status_code == 302


def test_state_change_without_csrf_token_is_refused(client, factory):
    factory.customer(email="a@example.com")
    login(client, "a@example.com")
    assert client.post("/logout").status_code == 400
    assert client.get("/dashboard").status_code == 200  # still logged in


def _request_reset(client, email):
    token = get_csrf(client, "/password/forgot")
    return client.post("/password/forgot", data={"email": email, "csrf_token": token})


def test_password_reset_email_goes_through_the_worker_and_the_token_works_once(
    client, session, factory, worker, mailbox
):
    factory.customer(email="a@example.com")
    response = _request_reset(client, "a@example.com")
    assert response.status_code == 303
    assert mailbox.messages == []  # queued, not sent inline
    worker.run_burst()
    [msg] = mailbox.wait_for(1)
    assert msg["To"] == "a@example.com"
    body = msg.get_body(("plain",)).get_content()
    link = next(word for word in body.split() if "/password/reset/" in word)
    path = link.split("127.0.0.1", 1)[1].split("/", 1)[1]
    path = "/" + path

    form_token = get_csrf(client, path)
    done = client.post(path, data={"password": "brand-new-password", "confirm": "brand-new-password", "csrf_token": form_token})
    assert done.status_code == 303 and done.headers["Location"].endswith("/login")
    login(client, "a@example.com", "brand-new-password")

    again = client.post(path, data={"password": "another-password", "confirm": "another-password",
                                    "csrf_token": get_csrf(client, path)})
    assert again.headers["Location"].endswith("/password/forgot")
    session.expire_all()
    assert session.scalar(select(func.count(PasswordResetToken.id)).where(PasswordResetToken.used_at.is_(None))) == 0


def test_expired_reset_token_is_refused(client, session, factory, app):
    from app import accounts

    factory.customer(email="a@example.com")
    _, token = accounts.create_reset_token(session, "a@example.com")
    session.execute(update(PasswordResetToken).values(expires_at=utcnow() - timedelta(minutes=1)))
    session.commit()
    form_token = get_csrf(client, f"/password/reset/{token}")
    response = client.post(
        f"/password/reset/{token}", data={"password": "brand-new-password", "confirm": "brand-new-password", "csrf_token": form_token}
    )
    assert response.headers["Location"].endswith("/password/forgot")
    login(client, "a@example.com")  # old password still works


def test_reset_for_unknown_email_reveals_nothing_and_sends_nothing(client, worker, mailbox):
    response = _request_reset(client, "nobody@example.com")
    assert response.status_code == 303
    worker.run_burst()
    assert mailbox.messages == []


def test_admin_pages_refuse_customers_and_redirect_anonymous_users(client, factory):
    assert client.get("/admin/").status_code == 302
    assert "/login" in client.get("/admin/").headers["Location"]
    factory.customer(email="a@example.com")
    login(client, "a@example.com")
    assert client.get("/admin/").status_code == 403


def test_admin_sees_admin_landing(client, factory):
    factory.admin(email="root@example.com", password="admin-password-1")
    login(client, "root@example.com", "admin-password-1")
    assert client.get("/admin/").status_code == 200


def test_login_next_parameter_cannot_redirect_off_site(client, factory):
    factory.customer(email="a@example.com")
    token = get_csrf(client)
    response = client.post(
        "/login?next=https://evil.example/", data={"email": "a@example.com", "password": "correct-horse-battery", "csrf_token": token}
    )
    assert response.headers["Location"] == "/dashboard"


def test_healthz_reports_database_and_redis(client):
    body = client.get("/healthz").get_json()
    assert body == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


def test_cli_creates_an_admin(app, session):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-admin", "--email", "boss@example.com", "--password", "boss-password-1"])
    assert result.exit_code == 0, result.output
    assert session.scalar(select(User.is_admin).where(User.email == "boss@example.com")) is True


def test_htmx_requests_carry_the_csrf_token_in_a_header(client, factory):
    factory.customer(email="a@example.com")
    login(client, "a@example.com")
    token = get_csrf(client, "/dashboard")
    response = client.post("/logout", headers={"X-CSRFToken": token, "HX-Request": "true"})
    assert response.status_code == 303
    assert client.get("/dashboard").status_code == 302


def test_two_clients_keep_their_own_sessions_and_csrf_tokens(app, factory):
    factory.customer(email="a@example.com")
    factory.customer(email="b@example.com")
    first, second = app.test_client(), app.test_client()
    login(first, "a@example.com")
    login(second, "b@example.com")
    assert "a@example.com" in first.get("/dashboard").get_data(as_text=True)
    assert "b@example.com" in second.get("/dashboard").get_data(as_text=True)
    assert get_csrf(first, "/dashboard") != get_csrf(second, "/dashboard")
