import os
import subprocess
import sys

import pytest

from app import accounts
from app.config import MissingSecretKey, ensure_secret_key
from tests.conftest import ROOT

pytestmark = pytest.mark.unit


def test_production_refuses_to_start_without_a_secret_key():
    with pytest.raises(MissingSecretKey, match="SECRET_KEY is not set"):
        ensure_secret_key({"SECRET_KEY": None, "DEBUG": False, "TESTING": False})


@pytest.mark.parametrize("mode", ["DEBUG", "TESTING"])
def test_debugging_and_tests_get_a_random_key_for_the_process(mode):
    first, second = {"SECRET_KEY": None, mode: True}, {"SECRET_KEY": None, mode: True}
    ensure_secret_key(first)
    ensure_secret_key(second)
    assert len(first["SECRET_KEY"]) == 64 and first["SECRET_KEY"] != second["SECRET_KEY"]


def test_the_wsgi_entry_point_does_not_start_without_a_secret_key():
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    result = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_bin_dev_keeps_a_random_key_in_instance_and_never_derives_it_from_the_host():
    script = (ROOT / "bin" / "dev").read_text()
    assert "hostname" not in script
    assert "instance/secret_key" in script and "umask 077" in script and "secrets.token_hex(32)" in script


DEMO_AND_FIXTURE_PASSWORDS = [
    # app/demo.py
    ("admin@example.com", "admin-password", "Demo Admin"),
    ("customer@example.com", "customer-password", "Demo Customer"),
    # tests/conftest.py factories and tests that sign up or log in with their own
    ("customer1@example.com", "correct-horse-battery", None),
    ("root@example.com", "admin-password-1", None),
    ("boss@example.com", "boss-password-long-1", None),
    ("race@example.com", "race-password-1", None),
    ("new@example.com", "a-long-password", "New"),
    ("browser@example.com", "browser-password", "Bea Browser"),
]


@pytest.mark.parametrize("email, password, name", DEMO_AND_FIXTURE_PASSWORDS)
def test_demo_and_fixture_passwords_satisfy_the_policy(email, password, name):
    assert accounts.password_problem(password, email=email, name=name) is None


def test_the_demo_uses_the_passwords_checked_here():
    from app.demo import DEMO_ADMIN, DEMO_CUSTOMER

    assert DEMO_ADMIN[1] == "admin-password" and DEMO_CUSTOMER[1] == "customer-password"


@pytest.mark.parametrize(
    "password, message",
    [
        ("password12", "Use at least 12 characters."),
        ("aaaaaaaaaaaa", 'This password is too easy to guess. Repeats like "aaa" are easy to guess.'),
        ("1234567890ab", "This password is too easy to guess. This is similar to a commonly used password."),
        ("password1234", "This password is too easy to guess."),
        ("x" * 129, "Use at most 128 characters."),
    ],
)
def test_weak_passwords_get_a_message_that_says_why(password, message):
    assert accounts.password_problem(password, email="someone@example.com").startswith(message)


def test_a_password_made_of_the_accounts_own_email_is_weak():
    assert accounts.password_problem("jane.doe@example.com", email="jane.doe@example.com") is not None
    assert accounts.password_problem("jane.doe@example.com1", email="jane.doe@example.com") is not None
    assert accounts.password_problem("velvet-harbour-cactus-91", email="jane.doe@example.com") is None


def test_long_passphrases_and_any_unicode_are_accepted_without_composition_rules():
    assert accounts.password_problem("velvet harbour cactus ninety", email="a@example.com") is None  # no digits, no capitals
    passphrase = "the quick velvet harbour swallowed seventy four cactus lanterns!"
    assert len(passphrase) == 64 and accounts.password_problem(passphrase, email="a@example.com") is None
    assert accounts.password_problem("ünïcödé-pässwörd-€-漢字-ok", email="a@example.com") is None
    assert accounts.password_problem("q" * 129, email="a@example.com") == "Use at most 128 characters."


def test_the_session_cookie_is_secure_whenever_the_portal_is_served_over_https(monkeypatch):
    from app.config import load_config

    monkeypatch.setenv("BASE_URL", "https://billing.example.com")
    monkeypatch.delenv("SESSION_COOKIE_SECURE", raising=False)
    config = load_config()
    assert config["SESSION_COOKIE_SECURE"] is True and config["SESSION_COOKIE_HTTPONLY"] is True
    assert config["SESSION_COOKIE_SAMESITE"] == "Lax"
