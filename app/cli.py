"""Flask CLI commands: `flask --app wsgi <command>`."""

import click
from flask import Flask, current_app

from app import accounts
from app.extensions import db
from app.migrate import upgrade_database


def register_cli(app: Flask) -> None:
    @app.cli.command("db-upgrade")
    def db_upgrade():
        """Apply Alembic migrations to DATABASE_URL."""
        upgrade_database(current_app.config["DATABASE_URL"])
        click.echo("database is at head")

    @app.cli.command("create-admin")
    @click.option("--email", prompt=True)
    @click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
    def create_admin(email: str, password: str):
        """Create an admin account: verified (whoever runs this vouches for the address), with an email
        the login form accepts and a password the policy accepts."""
        problems = login_form_email_errors(email)
        if problems:
            raise click.ClickException(f"{email!r} cannot log in: {' '.join(problems)}")
        try:
            accounts.create_user(db.session, email, password, is_admin=True)
        except accounts.WeakPassword as exc:
            raise click.ClickException(str(exc)) from None
        except accounts.EmailTaken:
            raise click.ClickException(f"{email} already has an account") from None
        click.echo(f"admin {email} created")

    @app.cli.command("serve-embedded")
    @click.option("--host", default="127.0.0.1")
    @click.option("--port", default=5000, type=int)
    def serve_embedded(host: str, port: int):
        """Embedded default: serve the app with in-process jobs and the periodic scheduler thread."""
        from jobs.schedule import start_inline_scheduler

        app = current_app._get_current_object()
        if app.config["JOBS_MODE"] == "inline":
            start_inline_scheduler(app)
        from werkzeug.serving import run_simple

        run_simple(host, port, app, threaded=True, use_reloader=False)

    @app.cli.command("seed-demo")
    def seed_demo_command():
        """Load demo data (idempotent): an admin, a customer, plans, a voucher."""
        from app.demo import seed_demo

        for line in seed_demo(db.session):
            click.echo(line)

    @app.cli.command("recompute-usage")
    @click.option("--period", required=True, help="Billing period, e.g. 2026-10")
    def recompute_usage_command(period: str):
        """Rebuild a period's usage from the deployment events and report differences against
        issued invoices. Read-only: invoices are never changed."""
        from app.billing.monthly import InvoicingError, recompute_usage

        try:
            checked, differences = recompute_usage(db.session, period)
        except (ValueError, InvoicingError) as exc:
            raise click.ClickException(str(exc)) from None
        for d in differences:
            click.echo(
                f"deployment {d.deployment_id} customer {d.customer_id} invoice {d.invoice_number or '-'}: "
                f"billed {d.billed_seconds}s {d.billed_cents}c, recomputed {d.recomputed_seconds}s {d.recomputed_cents}c"
            )
        click.echo(f"recompute-usage {period}: deployments={checked} differences={len(differences)}")
        _suggest_usage_credits(period)

    def _suggest_usage_credits(period: str) -> None:
        """Per invoice billed higher than recomputed usage: the credit note to issue, prefilled."""
        from flask import url_for

        from app.billing.money import format_money
        from app.billing.usage_credits import prefill_args, usage_credit_suggestions

        suggestions = usage_credit_suggestions(db.session, period)
        with current_app.test_request_context(base_url=current_app.config["BASE_URL"]):
            for s in suggestions:
                lines = ", ".join(f"{line.description} {line.credit_hours} h {format_money(line.amount_cents)}"
                                  for line in s.lines)
                link = url_for("admin.invoice_detail", invoice_id=s.invoice_id, _external=True,
                               **prefill_args(s, period))
                click.echo(f"credit note suggested: invoice {s.invoice_number} customer {s.customer_id}: {lines} "
                           f"(before tax {format_money(s.amount_cents)}) -> {link}")
        click.echo(f"recompute-usage {period}: credit notes suggested={len(suggestions)}")


def login_form_email_errors(email: str) -> list[str]:
    """What the login form would say about this email (its very validators), so that an account
    made from the command line is one that can log in."""
    from werkzeug.datastructures import MultiDict

    from app.web.forms import LoginForm

    with current_app.test_request_context():
        form = LoginForm(formdata=MultiDict({"email": email, "password": "-"}), meta={"csrf": False})
        form.email.validate(form)
        return list(form.email.errors)
