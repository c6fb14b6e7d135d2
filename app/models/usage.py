"""Plans, price versions, deployments and lifecycle events (usage issue).

Prices are versioned: a new price is a new `PlanPrice` row with its effective time, never an update.
A deployment snapshots the hourly price in force when it was created. Lifecycle changes are
append-only `DeploymentEvent` rows; `Deployment.state` is only a cache of the latest event, so any
bill can be recomputed from the events. The seconds of a deployment's invoice lines
(`InvoiceLine.deployment_id`, one line per deployment and invoice) are what is already billed, so
usage is never billed twice. Deployments (like users) are never deleted: the database refuses it.
"""

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, UTCDateTime, utcnow

PLAN_KINDS = ("vm", "k8s")
PLAN_SIZES = ("small", "medium", "large")
DEPLOYMENT_STATES = ("in_progress", "running", "failed", "suspended", "deleted")
EVENT_TYPES = ("created", "succeeded", "failed", "suspended", "resumed", "deleted")


def plan_name_for(kind: str, size: str, public_ip: bool) -> str:
    return f"{kind}-{size}" + ("-ip" if public_ip else "")


class Plan(Base):
    """kind × size × public IP. Its price lives in `PlanPrice` versions."""

    __tablename__ = "plans"
    __table_args__ = (UniqueConstraint("kind", "size", "public_ip"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(60), unique=True)
    kind: Mapped[str] = mapped_column(String(10))
    size: Mapped[str] = mapped_column(String(20))
    public_ip: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    prices: Mapped[list["PlanPrice"]] = relationship(
        back_populates="plan", order_by="PlanPrice.effective_at.desc(), PlanPrice.id.desc()"
    )


class PlanPrice(Base):
    """One price version of a plan: in force from `effective_at` until the next version's."""

    __tablename__ = "plan_prices"
    __table_args__ = (
        CheckConstraint("hourly_price >= 0", name="not_negative"),
        Index("ix_plan_prices_plan_effective", "plan_id", "effective_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    hourly_price: Mapped[Decimal] = mapped_column(Numeric(18, 6))
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    plan: Mapped[Plan] = relationship(back_populates="prices")


class Deployment(Base):
    """A VM or cluster reported by the platform. `hourly_price` is the snapshot taken at creation."""

    __tablename__ = "deployments"
    __table_args__ = (
        CheckConstraint(
            "state IN ('in_progress', 'running', 'failed', 'suspended', 'deleted')", name="state"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(120), unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    plan_name: Mapped[str] = mapped_column(String(60))
    hourly_price: Mapped[Decimal] = mapped_column(Numeric(18, 6))
    state: Mapped[str] = mapped_column(String(16), default="in_progress")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_event_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # set by dunning (mark_customer_deployments_for_deletion); the platform reads it via the API
    marked_for_deletion_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deletion_reason: Mapped[str | None] = mapped_column(String(500))


class DeploymentEvent(Base):
    """One lifecycle event, append-only; `event_id` is the platform's id (idempotency key)."""

    __tablename__ = "deployment_events"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('created', 'succeeded', 'failed', 'suspended', 'resumed', 'deleted')", name="kind"
        ),
        Index("ix_deployment_events_deployment_occurred", "deployment_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(120), unique=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"))
    kind: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    payload: Mapped[dict | None] = mapped_column(JSON)
