"""JSON API for the provisioning platform (/api/v1), documented by /api/v1/openapi.json.

Bearer token (PLATFORM_API_TOKEN, compared in constant time). Every error is JSON
{"error": ..., "field": ...}; services write nothing when they refuse.
"""

import hmac
from datetime import UTC, datetime

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import select

from app.billing import usage
from app.billing.accounts_view import dashboard_figures
from app.billing.can_deploy import UnknownCustomerOrPlan, can_deploy
from app.billing.pricing import list_plans
from app.extensions import csrf, db
from app.models.customer import User
from app.models.usage import EVENT_TYPES, Deployment
from app.web.openapi import MAX_INT, OPENAPI

bp = Blueprint("api", __name__)
csrf.exempt(bp)


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field


@bp.errorhandler(ApiError)
def _api_error(error: ApiError):
    response = jsonify(error=str(error), field=error.field)
    response.status_code = error.status
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="paydesk"'
    return response


@bp.before_request
def _require_token():
    if request.endpoint == "api.openapi_document":
        return None
    expected = current_app.config.get("PLATFORM_API_TOKEN") or ""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not expected or scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        raise ApiError(401, "Missing or wrong bearer token.", "Authorization")
    return None


@bp.get("/openapi.json")
def openapi_document():
    return jsonify(OPENAPI)


# ------------------------------------------------------------------ helpers ---
def _customer_id(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_INT:
        raise ApiError(404, "No such customer.", "customer_id")
    return int(raw)


def _string(body: dict, name: str, *, required: bool, max_length: int) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(422, f"{name} is required.", name)
        return None
    if not isinstance(value, str) or not value.strip():
        raise ApiError(422, f"{name} must be a non-empty string.", name)
    if len(value) > max_length or "\x00" in value:
        raise ApiError(422, f"{name} must be at most {max_length} printable characters.", name)
    return value


def _timestamp(value: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        if moment.tzinfo is None:
            raise ValueError
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ApiError(422, f"{name} must be an RFC 3339 date-time with an offset.", name) from None


def _deployment_json(deployment: Deployment) -> dict:
    return {
        "deployment_id": deployment.external_id,
        "customer_id": deployment.customer_id,
        "name": deployment.name,
        "plan": deployment.plan_name,
        "hourly_price": f"{deployment.hourly_price:.6f}",
        "state": deployment.state,
        "marked_for_deletion_at": deployment.marked_for_deletion_at.isoformat()
        if deployment.marked_for_deletion_at
        else None,
        "deletion_reason": deployment.deletion_reason,
    }


# -------------------------------------------------------------------- routes ---
@bp.post("/deployment-events")
def report_deployment_event():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object.", "body")
    event_id = _string(body, "event_id", required=True, max_length=120)
    deployment_id = _string(body, "deployment_id", required=True, max_length=120)
    customer_id = body.get("customer_id")
    if customer_id is None:
        raise ApiError(422, "customer_id is required.", "customer_id")
    if not isinstance(customer_id, int) or isinstance(customer_id, bool) or not 1 <= customer_id <= MAX_INT:
        raise ApiError(422, "customer_id must be a positive integer.", "customer_id")
    kind = _string(body, "type", required=True, max_length=20)
    if kind not in EVENT_TYPES:
        raise ApiError(422, f"type must be one of {', '.join(EVENT_TYPES)}.", "type")
    occurred_at = _timestamp(_string(body, "occurred_at", required=True, max_length=64), "occurred_at")
    plan = _string(body, "plan", required=kind == "created", max_length=60)
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 200 or "\x00" in name):
        raise ApiError(422, "name must be a string of at most 200 characters.", "name")
    try:
        recorded = usage.record_deployment_event(
            db.session,
            event_id=event_id,
            deployment_id=deployment_id,
            customer_id=customer_id,
            kind=kind,
            occurred_at=occurred_at,
            plan=plan,
            name=name or None,
        )
    except usage.UsageError as exc:
        raise ApiError(exc.status, str(exc), exc.field) from None
    payload = {"event_id": event_id, "recorded": recorded.created, "deployment": _deployment_json(recorded.deployment)}
    return jsonify(payload), 201 if recorded.created else 200


@bp.get("/customers/<raw_customer_id>/can-deploy")
def can_deploy_check(raw_customer_id: str):
    customer_id = _customer_id(raw_customer_id)
    plan = request.args.get("plan")
    if not plan or "\x00" in plan or len(plan) > 60:
        raise ApiError(422, "plan is required (e.g. vm-small-ip).", "plan")
    try:
        decision = can_deploy(db.session, customer_id, plan)
    except UnknownCustomerOrPlan as exc:
        raise ApiError(404, str(exc), exc.field) from None
    return jsonify(
        customer_id=customer_id,
        plan=plan,
        allowed=decision.allowed,
        code=decision.code,
        reason=decision.reason,
        required_cents=decision.required_cents,
        voucher_balance_cents=decision.voucher_balance_cents,
    )


@bp.get("/customers/<raw_customer_id>/billing-status")
def billing_status(raw_customer_id: str):
    customer_id = _customer_id(raw_customer_id)
    session = db.session
    customer = session.get(User, customer_id)
    if customer is None or customer.is_admin:
        raise ApiError(404, "No such customer.", "customer_id")
    figures = dashboard_figures(session, customer_id)
    reasons = []
    if customer.disputed:
        reasons.append("disputed")
    if customer.on_hold:
        reasons.append("on_hold")
    marked = session.scalars(
        select(Deployment)
        .where(
            Deployment.customer_id == customer_id,
            Deployment.marked_for_deletion_at.is_not(None),
            Deployment.state != "deleted",
        )
        .order_by(Deployment.id)
    ).all()
    return jsonify(
        customer_id=customer_id,
        currency=current_app.config["CURRENCY"],
        cash_balance_cents=figures.cash_balance_cents,
        voucher_balance_cents=figures.voucher_balance_cents,
        debt_cents=figures.debt_cents,
        open_invoices=figures.open_invoices,
        blocked=bool(reasons),
        block_reasons=reasons,
        deletion_scheduled=bool(marked),
        deployments_marked_for_deletion=[_deployment_json(d) for d in marked],
        hourly_cost_cents=str(usage.hourly_cost_cents_of_active_deployments(session, customer_id)),
        active_cost_until_period_end_cents=usage.active_deployments_cost_until_period_end(session, customer_id),
    )


@bp.get("/plans")
def plans():
    return jsonify(
        plans=[
            {
                "name": row.plan.name,
                "kind": row.plan.kind,
                "size": row.plan.size,
                "public_ip": row.plan.public_ip,
                "hourly_price": f"{row.current.hourly_price:.6f}" if row.current else None,
            }
            for row in list_plans(db.session)
        ]
    )
