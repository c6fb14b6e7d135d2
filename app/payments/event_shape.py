"""The shape of a Stripe event, checked in one place before anything applies it.

A signed event is still input: a field of the wrong type (a dict where an id belongs, a missing key,
wrong nesting) must be refused, never reach a handler and raise there. `parse_event` checks the
envelope and, for the event types Paydesk applies, every field their handlers read (JSON Schema,
validated by jsonschema-rs), and returns a `StripeEventIn`; anything else is `MalformedEvent`, which
says which field is wrong and under which id to record it as ignored. Pure parsing: no database, no
Stripe calls, so it can sit in front of whichever layer applies events.
"""

import hashlib
from dataclasses import dataclass
from functools import cache

import jsonschema_rs

MAX_STRIPE_INT = 2**53  # amounts and timestamps: integers JSON carries exactly

_ID = {"type": "string", "minLength": 1, "maxLength": 120, "pattern": r"^[^\u0000-\u001f\u007f]*$"}
_TEXT = {"type": ["string", "null"], "maxLength": 5000}
_COUNT = {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_STRIPE_INT}
_TYPE = {"type": "string", "minLength": 1, "maxLength": 80, "pattern": r"^[a-z0-9_.]+$"}
# an expandable reference: null, an id, or the expanded object with its id
_REF = {"anyOf": [{"type": "null"}, _ID, {"type": "object", "required": ["id"], "properties": {"id": _ID}}]}
_METADATA = {"type": ["object", "null"], "additionalProperties": {"type": ["string", "null"], "maxLength": 500}}


def _object(required=("id",), **properties) -> dict:
    return {
        "type": "object",
        "required": list(required),
        "properties": {"id": _ID, "object": _TEXT, "customer": _REF, **properties},
    }


_REFUND = _object(status=_TEXT, metadata=_METADATA, charge=_REF, payment_intent=_REF)
_DISPUTE = _object(amount=_COUNT, reason=_TEXT, status=_TEXT, charge=_REF, payment_intent=_REF)
_PAYMENT_METHOD = _object(
    card={
        "type": ["object", "null"],
        "properties": {"fingerprint": _TEXT, "brand": _TEXT, "last4": _TEXT, "exp_month": _COUNT, "exp_year": _COUNT},
    }
)

# what the handlers of app.payments.webhooks read, per event type
OBJECT_SCHEMAS = {
    "checkout.session.completed": _object(
        mode=_TEXT, setup_intent=_REF, payment_intent=_REF, payment_status=_TEXT, currency=_TEXT,
        amount_total=_COUNT, metadata=_METADATA,
    ),
    "setup_intent.succeeded": _object(payment_method=_REF, status=_TEXT),
    "payment_intent.succeeded": _object(
        status=_TEXT, amount=_COUNT, amount_received=_COUNT, currency=_TEXT, metadata=_METADATA,
    ),
    "payment_intent.payment_failed": _object(
        last_payment_error={"type": ["object", "null"], "properties": {"code": _TEXT, "message": _TEXT}},
    ),
    "payment_method.detached": _PAYMENT_METHOD,
    "payment_method.updated": _PAYMENT_METHOD,
    "payment_method.automatically_updated": _PAYMENT_METHOD,
    "charge.refunded": _object(
        refunds={"type": ["object", "null"], "properties": {"data": {"type": "array", "items": _REFUND}}},
    ),
    "refund.created": _REFUND,
    "refund.updated": _REFUND,
    "charge.refund.updated": _REFUND,
    "charge.dispute.created": _DISPUTE,
    "charge.dispute.closed": _DISPUTE,
}
# any other type is recorded without being applied: only what every event needs is checked
_ANY_OBJECT = _object(required=())


def _envelope(object_schema: dict) -> dict:
    return {
        "type": "object",
        "required": ["id", "type", "data"],
        "properties": {
            "id": _ID,
            "type": _TYPE,
            "created": _COUNT,
            "data": {"type": "object", "required": ["object"], "properties": {"object": object_schema}},
        },
    }


@cache
def _validator(event_type: str | None):
    return jsonschema_rs.validator_for(_envelope(OBJECT_SCHEMAS.get(event_type, _ANY_OBJECT)))


class MalformedEvent(ValueError):
    """A (signed) event that does not have the shape Paydesk needs. `record_id` is its id when that
    is a usable string, otherwise a stable id derived from the payload; `event_type` likewise."""

    def __init__(self, reason: str, record_id: str, event_type: str, created: int):
        super().__init__(reason)
        self.reason = reason
        self.record_id = record_id
        self.event_type = event_type
        self.created = created


@dataclass(frozen=True)
class StripeEventIn:
    id: str
    type: str
    created: int
    object: dict
    stripe_customer: str | None  # the Stripe customer the event is about, if any


def _ref_id(value) -> str | None:
    return value.get("id") if isinstance(value, dict) else value


def parse_event(raw, payload: bytes | None = None) -> StripeEventIn:
    """Check a Stripe event (a parsed JSON value) and return it typed; raise MalformedEvent."""
    event_type = raw.get("type") if isinstance(raw, dict) else None
    event_type = event_type if isinstance(event_type, str) else None
    error = next(_validator(event_type).iter_errors(raw), None)
    if error is not None:
        raise _malformed(raw, payload, event_type, error)
    obj = raw["data"]["object"]
    customer = obj.get("id") if obj.get("object") == "customer" else _ref_id(obj.get("customer"))
    return StripeEventIn(raw["id"], raw["type"], int(raw.get("created") or 0), obj, customer)


def _malformed(raw, payload: bytes | None, event_type: str | None, error) -> MalformedEvent:
    where = "/".join(str(part) for part in error.instance_path)[:200] or "(event)"
    kind = type(error.kind).__name__
    if kind == "Required":
        reason = f"missing {str(error.kind.property)[:60]} at {where}"
    else:
        reason = f"wrong {kind.lower()} at {where}"
    candidate = raw.get("id") if isinstance(raw, dict) else None
    if _fits("id", candidate):
        record_id = candidate
    else:
        record_id = f"malformed_{hashlib.sha256(_fingerprint(raw, payload)).hexdigest()[:48]}"
    created = raw.get("created") if isinstance(raw, dict) else None
    created = created if _fits("created", created) else 0
    event_type = event_type if _fits("type", event_type) else "malformed"
    return MalformedEvent(reason, record_id, event_type, created)


def _fingerprint(raw, payload: bytes | None) -> bytes:
    if payload is not None:
        return payload
    try:
        return repr(raw)[:100_000].encode()
    except RecursionError:
        return b"nested too deep"


_FIELDS = {"id": _ID, "created": _COUNT, "type": _TYPE}


@cache
def _field_validator(name: str):
    return jsonschema_rs.validator_for(_FIELDS[name])


def _fits(name: str, value) -> bool:
    return value is not None and _field_validator(name).is_valid(value)
