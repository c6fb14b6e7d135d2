"""JSON API for the provisioning platform (/api/v1), documented by /api/v1/openapi.json.

Bearer token (PLATFORM_API_TOKEN, compared in constant time). Every error under /api/v1 is JSON
{"error": ..., "field": ...}, whatever its status (`api_error_response`, also used by the app's error
handlers for routing errors and 500s). Bodies are limited to 64 KiB and checked against the OpenAPI
schema (app.web.openapi.validate) before any service runs; services write nothing when they refuse.
"""

import hmac
import json
import logging
from datetime import UTC, datetime, timedelta

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from app.billing import platform_customers, spending_limits, usage
from app.billing.accounts_view import dashboard_figures
from app.billing.can_deploy import UnknownCustomerOrPlan, can_deploy
from app.billing.pricing import list_plans
from app.extensions import csrf, db
from app.models.base import utcnow
from app.models.customer import User
from app.models.usage import EVENT_TYPES, Deployment
from app.web.openapi import (
    MAX_BODY_BYTES,
    MAX_INT,
    OPENAPI,
    SchemaViolation,
    query_parameter_schema,
    request_body_schema,
    validate,
)

API_PREFIX = "/api/v1"
EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=UTC)
CLOCK_SKEW = timedelta(minutes=5)
log = logging.getLogger(__name__)
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


def is_api_request() -> bool:
    return request.path == API_PREFIX or request.path.startswith(API_PREFIX + "/")


HTTP_MESSAGES = {
    400: "Bad request.",
    404: "No such resource.",
    405: "Method not allowed.",
    413: f"The body is larger than {MAX_BODY_BYTES // 1024} KiB.",
    500: "Internal error; nothing was written.",
}


def api_error_response(error: Exception, status: int):
    """The JSON answer to any error under /api/v1 (routing errors, 413, unexpected exceptions). The
    session is rolled back first, and building this answer never raises."""
    try:
        db.session.rollback()
    except SQLAlchemyError:
        log.warning("rollback before an API error answer failed", exc_info=True)
    message = HTTP_MESSAGES.get(status) or (error.name if isinstance(error, HTTPException) else "Error") + "."
    response = jsonify(error=message, field="body" if status == 413 else None)
    response.status_code = status
    if isinstance(error, HTTPException) and status == 405:
        response.headers["Allow"] = ", ".join(error.valid_methods or [])
    return response


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException):
    return api_error_response(error, error.code or 500)


@bp.before_request
def _limit_body():
    """64 KiB at most: refused before reading when the length is announced, and while reading otherwise."""
    request.max_content_length = MAX_BODY_BYTES
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiError(413, HTTP_MESSAGES[413], "body")


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


def _json_object() -> dict:
    """The request body as a JSON object (400 otherwise; deep nesting is refused, never a RecursionError)."""
    if not request.is_json:
        raise ApiError(400, "The body must be a JSON object (Content-Type: application/json).", "body")
    try:
        data = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise ApiError(413, HTTP_MESSAGES[413], "body") from None
    if request.content_length is None and len(data) >= MAX_BODY_BYTES:
        # a body without a length (chunked) is read up to the limit; reaching it means there was more
        raise ApiError(413, HTTP_MESSAGES[413], "body")
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise ApiError(400, "The body must be a JSON object.", "body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object.", "body")
    return body


def _checked(path: tuple, instance, field: str = "body"):
    try:
        validate(path, instance, field)
    except SchemaViolation as exc:
        raise ApiError(422, str(exc), exc.field) from None
    return instance


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


def _check_spending_alerts(customer_id: int) -> None:
    """A lifecycle event can move this month's spending (a late event adds hours): alert now rather
    than at the next periodic check. The event is already recorded; a failure here only logs."""
    try:
        spending_limits.check_spending_alerts(db.session, customer_id)
        db.session.commit()
    except Exception:
        db.session.rollback()
        log.exception("spending alert check after a usage event failed for customer %s", customer_id)


# -------------------------------------------------------------------- routes ---
@bp.post("/deployment-events")
def report_deployment_event():
    body = _checked(request_body_schema("DeploymentEventIn"), _json_object())
    event_id, deployment_id, customer_id = body["event_id"], body["deployment_id"], body["customer_id"]
    kind, plan, name = body["type"], body.get("plan"), body.get("name")
    if kind not in EVENT_TYPES:  # the schema's enum; kept in step with the model
        raise ApiError(422, f"type must be one of {', '.join(EVENT_TYPES)}.", "type")
    if kind == "created" and plan is None:
        raise ApiError(422, "plan is required for a created event.", "plan")
    occurred_at = _timestamp(body["occurred_at"], "occurred_at")
    if not EARLIEST_EVENT <= occurred_at <= utcnow() + CLOCK_SKEW:
        # an event reported ahead of time would make every real event after it "out of order"
        raise ApiError(422, "occurred_at must be a moment that has passed (at most 5 minutes ahead of "
                            "Paydesk's clock), after 2000-01-01.", "occurred_at")
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
    if recorded.created:
        _check_spending_alerts(customer_id)
    payload = {"event_id": event_id, "recorded": recorded.created, "deployment": _deployment_json(recorded.deployment)}
    return jsonify(payload), 201 if recorded.created else 200


def _customer_json(customer) -> dict:
    return {"customer_id": customer.id, "email": customer.email, "name": customer.name,
            "external_ref": customer.external_ref}


@bp.get("/customers")
def find_customers():
    route = "/customers"
    email, external_ref = request.args.get("email"), request.args.get("external_ref")
    if (email is None) == (external_ref is None):
        raise ApiError(422, "Give exactly one of email and external_ref.", "email" if email is None else "external_ref")
    if email is not None:
        _checked(query_parameter_schema(route, "get", "email"), email, "email")
    else:
        _checked(query_parameter_schema(route, "get", "external_ref"), external_ref, "external_ref")
    found = platform_customers.find_customers(db.session, email=email, external_ref=external_ref)
    return jsonify(customers=[_customer_json(c) for c in found])


@bp.get("/customers/<raw_customer_id>")
def get_customer(raw_customer_id: str):
    try:
        customer = platform_customers.get_customer(db.session, _customer_id(raw_customer_id))
    except platform_customers.UnknownCustomer as exc:
        raise ApiError(404, str(exc), "customer_id") from None
    return jsonify(_customer_json(customer))


@bp.put("/customers/<raw_customer_id>/external-ref")
def set_external_ref(raw_customer_id: str):
    customer_id = _customer_id(raw_customer_id)
    body = _checked(request_body_schema("ExternalRefIn"), _json_object())
    try:
        customer = platform_customers.set_external_ref(db.session, customer_id, body["external_ref"])
    except platform_customers.UnknownCustomer as exc:
        raise ApiError(404, str(exc), "customer_id") from None
    except platform_customers.ExternalRefTaken as exc:
        raise ApiError(409, str(exc), "external_ref") from None
    return jsonify(_customer_json(customer))


@bp.get("/customers/<raw_customer_id>/can-deploy")
def can_deploy_check(raw_customer_id: str):
    customer_id = _customer_id(raw_customer_id)
    plan = request.args.get("plan")
    if plan is None:
        raise ApiError(422, "plan is required (e.g. vm-small-ip).", "plan")
    _checked(query_parameter_schema("/customers/{customer_id}/can-deploy", "get", "plan"), plan, "plan")
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
