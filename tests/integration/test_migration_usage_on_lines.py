"""Migration 0018: billed usage moves from `usage_charges` onto the invoice lines, on a real database.

A database at 0017 with a usage invoice (its lines and their charges) upgrades to head: the lines keep
every billed second, `usage_charges` is gone, users and deployments can no longer be deleted. The
downgrade writes the same charges back. A charge that differs from its line stops the upgrade with
nothing changed."""

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from app.migrate import alembic_config, upgrade_database
from tests.conftest import TEST_DATABASE_URL, _recreate_database

pytestmark = pytest.mark.integration

URL = make_url(TEST_DATABASE_URL).set(database=make_url(TEST_DATABASE_URL).database + "_migration")
URL_STR = URL.render_as_string(hide_password=False)

SEED = [
    """INSERT INTO users (id, email, password_hash, is_admin, created_at, cash_balance_cents, voucher_balance_cents,
                          on_hold, disputed) VALUES (1, 'm@example.com', 'x', false, now(), 0, 0, false, false)""",
    "INSERT INTO plans (id, name, kind, size, public_ip, created_at) VALUES (1, 'vm-small', 'vm', 'small', false, now())",
    """INSERT INTO deployments (id, external_id, customer_id, name, plan_id, plan_name, hourly_price, state,
                                created_at, last_event_at)
       VALUES (1, 'd1', 1, 'web-1', 1, 'vm-small', 0.1, 'running', now(), now()),
              (2, 'd2', 1, 'web-2', 1, 'vm-small', 0.1, 'running', now(), now())""",
    """INSERT INTO invoices (id, customer_id, state, number, number_year, number_seq, billing_period, currency,
                             subtotal_cents, tax_rate, tax_cents, total_cents, paid_cents, created_at, issued_at)
       VALUES (1, 1, 'open', '2026-000001', 2026, 1, '2026-10', 'usd', 300, 0, 0, 300, 0, now(), now())""",
    """INSERT INTO invoice_lines (id, invoice_id, position, description, plan_name, deployment_id, seconds,
                                  hourly_price, amount_cents)
       VALUES (1, 1, 0, 'web-1', 'vm-small', 1, 36000, 0.1, 100), (2, 1, 1, 'web-2', 'vm-small', 2, 72000, 0.1, 200)""",
    """INSERT INTO usage_charges (deployment_id, invoice_id, invoice_line_id, billing_period, seconds, amount_cents,
                                  created_at)
       VALUES (1, 1, 1, '2026-10', 36000, 100, now()), (2, 1, 2, '2026-10', 72000, 200, now())""",
]
CHARGES = "SELECT deployment_id, invoice_id, invoice_line_id, billing_period, seconds, amount_cents FROM usage_charges " \
          "ORDER BY invoice_line_id"


@pytest.fixture
def at_0017():
    from alembic import command

    _recreate_database(URL_STR)
    command.upgrade(alembic_config(URL_STR), "0017_unresolved_attempts")
    engine = create_engine(URL)
    with engine.begin() as conn:
        for statement in SEED:
            conn.execute(text(statement))
    yield engine
    engine.dispose()


def test_upgrade_moves_billed_usage_onto_the_lines_and_the_downgrade_restores_the_charges(at_0017):
    from alembic import command

    with at_0017.connect() as conn:
        charges = conn.execute(text(CHARGES)).all()
    upgrade_database(URL_STR)
    with at_0017.connect() as conn:
        assert conn.execute(text("SELECT to_regclass('usage_charges')")).scalar() is None
        billed = conn.execute(text("SELECT deployment_id, sum(seconds) FROM invoice_lines GROUP BY deployment_id "
                                   "ORDER BY deployment_id")).all()
        assert billed == [(1, 36000), (2, 72000)]
        with pytest.raises(DBAPIError, match="never deleted"):
            conn.execute(text("DELETE FROM deployments WHERE id = 1"))
        conn.rollback()
        with pytest.raises(DBAPIError, match="uq_invoice_lines_deployment_id_invoice_id"):  # one line per deployment, invoice
            conn.execute(text("INSERT INTO invoice_lines (id, invoice_id, position, description, deployment_id, seconds, "
                              "amount_cents) VALUES (10, 1, 2, 'again', 1, 10, 1)"))
        conn.rollback()
        with pytest.raises(DBAPIError, match="fk_invoice_lines_deployment_id_deployments"):  # its deployment exists
            conn.execute(text("INSERT INTO invoice_lines (id, invoice_id, position, description, deployment_id, seconds, "
                              "amount_cents) VALUES (11, 1, 2, 'ghost', 99, 10, 1)"))
        conn.rollback()
    command.downgrade(alembic_config(URL_STR), "0017_unresolved_attempts")
    with at_0017.connect() as conn:
        assert conn.execute(text(CHARGES)).all() == charges
        assert conn.execute(text("SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%never_deleted'")).scalar() == 0


def test_upgrade_refuses_a_charge_that_differs_from_its_line_and_changes_nothing(at_0017):
    with at_0017.begin() as conn:
        conn.execute(text("UPDATE usage_charges SET seconds = seconds + 1 WHERE invoice_line_id = 2"))
    with pytest.raises(RuntimeError, match="1 usage charges differ from their invoice lines"):
        upgrade_database(URL_STR)
    with at_0017.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0017_unresolved_attempts"
        assert conn.execute(text("SELECT count(*) FROM usage_charges")).scalar() == 2
