"""All models, imported here so Alembic and the app see one metadata."""

# Feature modules: import their classes from the module itself (app.models.voucher.Voucher, …).
from app.models import credit_note, dunning, foresight, notification, stripe_events, usage, voucher  # noqa: E402,F401,I001
from app.models.audit import AuditLog
from app.models.base import Base
from app.models.card import BillingCustomer, Card
from app.models.customer import EmailVerificationToken, PasswordResetToken, User, UserSession
from app.models.invoice import Invoice, InvoiceLine, InvoiceNumberCounter, InvoicePayment
from app.models.ledger import LedgerEntry
from app.models.settlement import ChargeAttempt, SettlementRequest

__all__ = [
    "AuditLog",
    "Base",
    "BillingCustomer",
    "Card",
    "ChargeAttempt",
    "EmailVerificationToken",
    "Invoice",
    "InvoiceLine",
    "InvoiceNumberCounter",
    "InvoicePayment",
    "LedgerEntry",
    "PasswordResetToken",
    "SettlementRequest",
    "User",
    "UserSession",
]
