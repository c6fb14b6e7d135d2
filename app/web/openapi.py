"""The OpenAPI 3 document of the platform API, served at /api/v1/openapi.json, and the one schema
layer that checks requests against it before anything touches the database.

Tests validate real responses against it (schemathesis), so it must match app/web/api.py.
"""

from functools import cache

import jsonschema_rs

MAX_INT = 2147483647
MAX_BODY_BYTES = 64 * 1024
# printable text: no control characters (NUL included), and not only blanks
PRINTABLE = r"^[^\u0000-\u001f\u007f]*$"
PRINTABLE_NOT_BLANK = r"^[^\u0000-\u001f\u007f]*[^\s\u0000-\u001f\u007f][^\u0000-\u001f\u007f]*$"

_ERROR = {
    "type": "object",
    "required": ["error", "field"],
    "properties": {"error": {"type": "string"}, "field": {"type": ["string", "null"]}},
}


def _error_response(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


_PLAN = {"type": "string", "minLength": 1, "maxLength": 60, "pattern": PRINTABLE_NOT_BLANK}

_EMAIL = {"type": "string", "minLength": 1, "maxLength": 254, "pattern": PRINTABLE_NOT_BLANK}
_EXTERNAL_REF = {"type": "string", "minLength": 1, "maxLength": 120, "pattern": PRINTABLE_NOT_BLANK}

_CUSTOMER_ID = {
    "name": "customer_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_INT},
}

OPENAPI = {
    "openapi": "3.1.0",
    "info": {
        "title": "Paydesk platform API",
        "version": "1.0.0",
        "description": "For the provisioning platform: report deployment lifecycle events, ask whether a "
        "customer may deploy, read a customer's billing status, find a customer by email or by the platform's own "
        "reference (which the platform sets). Amounts are integers in the currency's minor "
        "unit; hourly prices are decimal strings with up to 6 places. Every error under /api/v1 is JSON "
        "`{\"error\": ..., \"field\": ...}`; request bodies are limited to 64 KiB (413).",
    },
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}],
    "paths": {
        "/deployment-events": {
            "post": {
                "operationId": "reportDeploymentEvent",
                "summary": "Report one lifecycle event of a deployment (idempotent by event_id).",
                "description": "Events of one deployment must arrive in time order and follow the lifecycle "
                "created → succeeded | failed; running → suspended → resumed; any → deleted. An older or "
                "impossible event is rejected with 409 and nothing is written. Replaying an event id with the "
                "same content returns 200 with recorded=false; the same event id with different content is a "
                "409. The body is checked against DeploymentEventIn before anything is written.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DeploymentEventIn"}}},
                },
                "responses": {
                    "201": {"description": "Recorded.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EventResult"}}}},
                    "200": {"description": "Already recorded (replay).", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EventResult"}}}},
                    "400": _error_response("The body is not a JSON object."),
                    "401": _error_response("Missing or wrong bearer token."),
                    "404": _error_response("Unknown customer (or not a customer)."),
                    "409": _error_response("Out of order, impossible transition, or event id reused for another event."),
                    "413": _error_response("The body is larger than 64 KiB."),
                    "422": _error_response("A field is missing, unknown or invalid; `field` names it."),
                },
            }
        },
        "/customers": {
            "get": {
                "operationId": "findCustomers",
                "summary": "Find a customer by email or by the platform's own reference (exactly one of them).",
                "description": "The email matches case-insensitively, as at login; external_ref matches exactly. "
                "The list holds the one customer found, or nothing.",
                "parameters": [
                    {"name": "email", "in": "query", "required": False, "schema": _EMAIL},
                    {"name": "external_ref", "in": "query", "required": False, "schema": _EXTERNAL_REF},
                ],
                "responses": {
                    "200": {"description": "The customers found (zero or one).", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CustomerList"}}}},
                    "401": _error_response("Missing or wrong bearer token."),
                    "422": _error_response("Neither or both of email and external_ref given, or one is invalid."),
                },
            }
        },
        "/customers/{customer_id}": {
            "get": {
                "operationId": "getCustomer",
                "summary": "A customer's id, email, name and external_ref.",
                "parameters": [_CUSTOMER_ID],
                "responses": {
                    "200": {"description": "The customer.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Customer"}}}},
                    "401": _error_response("Missing or wrong bearer token."),
                    "404": _error_response("Unknown customer."),
                },
            }
        },
        "/customers/{customer_id}/external-ref": {
            "put": {
                "operationId": "setCustomerExternalRef",
                "summary": "Set (or clear, with null) the platform's own reference of a customer; idempotent.",
                "description": "Unique across customers: a reference another customer has is a 409 and nothing "
                "changes. Afterwards GET /customers?external_ref=… finds the customer.",
                "parameters": [_CUSTOMER_ID],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExternalRefIn"}}},
                },
                "responses": {
                    "200": {"description": "The customer as it is now.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Customer"}}}},
                    "400": _error_response("The body is not a JSON object."),
                    "401": _error_response("Missing or wrong bearer token."),
                    "404": _error_response("Unknown customer."),
                    "409": _error_response("Another customer already has this external_ref."),
                    "413": _error_response("The body is larger than 64 KiB."),
                    "422": _error_response("external_ref is missing or invalid."),
                },
            }
        },
        "/customers/{customer_id}/can-deploy": {
            "get": {
                "operationId": "canDeploy",
                "summary": "May the customer create a deployment of this plan now? Says why when not.",
                "parameters": [
                    _CUSTOMER_ID,
                    {"name": "plan", "in": "query", "required": True, "schema": _PLAN},
                ],
                "responses": {
                    "200": {"description": "The decision.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CanDeploy"}}}},
                    "401": _error_response("Missing or wrong bearer token."),
                    "404": _error_response("Unknown customer or plan; `field` says which."),
                    "422": _error_response("A parameter is missing or invalid."),
                },
            }
        },
        "/customers/{customer_id}/billing-status": {
            "get": {
                "operationId": "billingStatus",
                "summary": "Balances, debt, blocks and deletion marks of a customer.",
                "parameters": [_CUSTOMER_ID],
                "responses": {
                    "200": {"description": "The status.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BillingStatus"}}}},
                    "401": _error_response("Missing or wrong bearer token."),
                    "404": _error_response("Unknown customer."),
                },
            }
        },
        "/plans": {
            "get": {
                "operationId": "listPlans",
                "summary": "Plans with their current hourly prices.",
                "responses": {
                    "200": {
                        "description": "The plans.",
                        "content": {"application/json": {"schema": {"type": "object", "required": ["plans"], "properties": {"plans": {"type": "array", "items": {"$ref": "#/components/schemas/Plan"}}}}}},
                    },
                    "401": _error_response("Missing or wrong bearer token."),
                },
            }
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": _ERROR,
            "Customer": {
                "type": "object",
                "required": ["customer_id", "email", "name", "external_ref"],
                "properties": {
                    "customer_id": {"type": "integer"},
                    "email": {"type": "string"},
                    "name": {"type": ["string", "null"]},
                    "external_ref": {"type": ["string", "null"], "description": "Set by the platform, unique."},
                },
            },
            "CustomerList": {
                "type": "object",
                "required": ["customers"],
                "properties": {"customers": {"type": "array", "maxItems": 1, "items": {"$ref": "#/components/schemas/Customer"}}},
            },
            "ExternalRefIn": {
                "type": "object",
                "required": ["external_ref"],
                "additionalProperties": False,
                "properties": {"external_ref": {**_EXTERNAL_REF, "type": ["string", "null"],
                                                "description": "The platform's id for the customer; null clears it."}},
            },
            "DeploymentEventIn": {
                "type": "object",
                "required": ["event_id", "deployment_id", "customer_id", "type", "occurred_at"],
                "additionalProperties": False,
                "properties": {
                    "event_id": {"type": "string", "minLength": 1, "maxLength": 120, "pattern": PRINTABLE_NOT_BLANK},
                    "deployment_id": {"type": "string", "minLength": 1, "maxLength": 120, "pattern": PRINTABLE_NOT_BLANK},
                    "customer_id": {"type": "integer", "minimum": 1, "maximum": MAX_INT},
                    "type": {"type": "string", "enum": ["created", "succeeded", "failed", "suspended", "resumed", "deleted"]},
                    "occurred_at": {"type": "string", "format": "date-time", "maxLength": 64,
                                    "description": "RFC 3339 with offset; a moment that has passed (at most 5 "
                                    "minutes ahead of Paydesk's clock), after 2000-01-01."},
                    "plan": {**_PLAN, "description": "Required for created, e.g. vm-small-ip."},
                    "name": {"type": "string", "maxLength": 200, "pattern": PRINTABLE},
                },
            },
            "Deployment": {
                "type": "object",
                "required": ["deployment_id", "customer_id", "name", "plan", "hourly_price", "state", "marked_for_deletion_at", "deletion_reason"],
                "properties": {
                    "deployment_id": {"type": "string"},
                    "customer_id": {"type": "integer"},
                    "name": {"type": "string"},
                    "plan": {"type": "string"},
                    "hourly_price": {"type": "string", "pattern": "^[0-9]+\\.[0-9]{6}$"},
                    "state": {"type": "string", "enum": ["in_progress", "running", "failed", "suspended", "deleted"]},
                    "marked_for_deletion_at": {"type": ["string", "null"], "format": "date-time"},
                    "deletion_reason": {"type": ["string", "null"]},
                },
            },
            "EventResult": {
                "type": "object",
                "required": ["event_id", "recorded", "deployment"],
                "properties": {
                    "event_id": {"type": "string"},
                    "recorded": {"type": "boolean", "description": "false when this event id was already recorded"},
                    "deployment": {"$ref": "#/components/schemas/Deployment"},
                },
            },
            "CanDeploy": {
                "type": "object",
                "required": ["customer_id", "plan", "allowed", "code", "reason", "required_cents", "voucher_balance_cents"],
                "properties": {
                    "customer_id": {"type": "integer"},
                    "plan": {"type": "string"},
                    "allowed": {"type": "boolean"},
                    "code": {"type": "string", "enum": ["card", "voucher", "disputed", "on_hold", "spending_limit", "insufficient_voucher", "no_payment_method"]},
                    "reason": {"type": ["string", "null"]},
                    "required_cents": {"type": "integer"},
                    "voucher_balance_cents": {"type": "integer"},
                },
            },
            "BillingStatus": {
                "type": "object",
                "required": [
                    "customer_id", "currency", "cash_balance_cents", "voucher_balance_cents", "debt_cents",
                    "open_invoices", "blocked", "block_reasons", "deletion_scheduled", "deployments_marked_for_deletion",
                    "hourly_cost_cents", "active_cost_until_period_end_cents",
                ],
                "properties": {
                    "customer_id": {"type": "integer"},
                    "currency": {"type": "string"},
                    "cash_balance_cents": {"type": "integer"},
                    "voucher_balance_cents": {"type": "integer"},
                    "debt_cents": {"type": "integer"},
                    "open_invoices": {"type": "integer"},
                    "blocked": {"type": "boolean"},
                    "block_reasons": {"type": "array", "items": {"type": "string"}},
                    "deletion_scheduled": {"type": "boolean"},
                    "deployments_marked_for_deletion": {"type": "array", "items": {"$ref": "#/components/schemas/Deployment"}},
                    "hourly_cost_cents": {"type": "string", "description": "Exact per-hour burn of active deployments, minor units."},
                    "active_cost_until_period_end_cents": {"type": "integer"},
                },
            },
            "Plan": {
                "type": "object",
                "required": ["name", "kind", "size", "public_ip", "hourly_price"],
                "properties": {
                    "name": {"type": "string"},
                    "kind": {"type": "string"},
                    "size": {"type": "string"},
                    "public_ip": {"type": "boolean"},
                    "hourly_price": {"type": ["string", "null"]},
                },
            },
        },
    },
}


# ------------------------------------------------------------- the schema layer ---
class SchemaViolation(ValueError):
    """A request part that does not match its schema; `field` names it, the message says what is expected."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def _at(path: tuple) -> dict:
    node = OPENAPI
    for key in path:
        node = node[key]
    return node


@cache
def _validator(path: tuple):
    return jsonschema_rs.validator_for(_at(path))


def request_body_schema(name: str) -> tuple:
    return ("components", "schemas", name)


def query_parameter_schema(route: str, method: str, name: str) -> tuple:
    parameters = _at(("paths", route, method, "parameters"))
    index = next(i for i, p in enumerate(parameters) if p["name"] == name and p["in"] == "query")
    return ("paths", route, method, "parameters", index, "schema")


def validate(path: tuple, instance, field: str = "body") -> None:
    """Check `instance` against the schema at `path` in the OpenAPI document; raise SchemaViolation
    naming the first offending field. Messages never echo the input."""
    error = next(_validator(path).iter_errors(instance), None)
    if error is None:
        return
    schema = _at(path)
    kind = error.kind
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
        name = str(kind.property)[:60]
        raise SchemaViolation(f"{name} is required.", name)
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.AdditionalProperties):
        name = str(kind.unexpected[0])[:60]
        allowed = ", ".join(schema.get("properties", {}))
        raise SchemaViolation(f"Unknown field {name!r}; the fields are: {allowed}.", name)
    path_in_instance = list(error.instance_path)
    if path_in_instance and "properties" in schema:
        name = str(path_in_instance[0])
        raise SchemaViolation(f"{name} must be {describe(schema['properties'].get(name, {}))}.", name)
    if schema.get("type") == "object":
        raise SchemaViolation("The body must be a JSON object.", field)
    raise SchemaViolation(f"{field} must be {describe(schema)}.", field)


def describe(schema: dict) -> str:
    """What a value of this schema looks like, in words."""
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list) and "null" in kind:  # e.g. ["string", "null"]: the value, or null
        others = [k for k in kind if k != "null"]
        return describe({**schema, "type": others[0] if len(others) == 1 else others}) + ", or null"
    if kind == "integer":
        return f"an integer from {schema.get('minimum', '-inf')} to {schema.get('maximum', 'inf')}"
    if kind == "string":
        if schema.get("format") == "date-time":
            return "an RFC 3339 date-time with an offset, e.g. 2026-11-02T10:00:00Z"
        text = f"a string of {schema.get('minLength', 0)} to {schema['maxLength']} characters" \
            if "maxLength" in schema else "a string"
        if schema.get("pattern") == PRINTABLE_NOT_BLANK:
            text += ", not blank, without control characters"
        elif schema.get("pattern") == PRINTABLE:
            text += " without control characters"
        return text
    return f"of type {kind}" if kind else "valid"
