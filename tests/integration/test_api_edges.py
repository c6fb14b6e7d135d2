"""Platform API at its edges (/api/v1): a 64 KiB body limit (413), JSON for every error status, the
body checked against the OpenAPI schema before the database is touched, nested JSON refused, event ids
that conflict, and customer ids that are not customers."""

import json

import pytest
import requests
from sqlalchemy import event as sa_event
from sqlalchemy import func, select

from app.models.usage import Deployment, DeploymentEvent
from tests.conftest import PLATFORM_TOKEN
from tests.integration.usage_helpers import make_plan

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
EVENTS = "/api/v1/deployment-events"


def _created(customer_id, event_id="e1", deployment="dep-1", **extra):
    return {"event_id": event_id, "deployment_id": deployment, "customer_id": customer_id, "type": "created",
            "occurred_at": "2026-11-02T10:00:00Z", "plan": "vm-small", "name": "web-1", **extra}


def _raw(client, body: bytes, headers=AUTH):
    return client.post(EVENTS, data=body, headers={**headers, "Content-Type": "application/json"})


def _json_error(response, status, field=None):
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error", "field"} and body["error"]
    if field is not None:
        assert body["field"] == field
    return body


def _nothing_written(session):
    session.expire_all()
    return session.scalar(select(func.count(DeploymentEvent.id))) == 0 == session.scalar(select(func.count(Deployment.id)))


def test_bodies_over_64_kib_are_refused_with_413_before_they_are_read(client, session, factory):
    customer = factory.customer()
    make_plan(session)
    for size in (64 * 1024 + 1, 1024 * 1024, 20 * 1024 * 1024):
        body = json.dumps({**_created(customer.id), "name": "x" * size}).encode()
        _json_error(_raw(client, body), 413, "body")
    assert _nothing_written(session)
    just_under = json.dumps({**_created(customer.id), "name": "x" * (60 * 1024)}).encode()
    assert len(just_under) < 64 * 1024
    _json_error(_raw(client, just_under), 422, "name")  # read and checked: only too long for a name


def test_a_chunked_body_without_a_length_is_cut_at_64_kib_over_real_http(live_server, session, factory):
    customer = factory.customer()
    make_plan(session)

    head, tail = json.dumps({**_created(customer.id), "name": "NAME"}).encode().split(b"NAME")

    def chunks():  # a valid event whose name makes it 200 KiB, sent without a Content-Length
        yield head
        for _ in range(200):
            yield b"x" * 1024
        yield tail

    response = requests.post(f"{live_server}{EVENTS}", data=chunks(), timeout=30,
                             headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["field"] == "body"
    assert _nothing_written(session)


@pytest.mark.allows_5xx("provokes a 500 on purpose to prove it is answered in JSON")
def test_every_error_status_under_the_api_is_json(app, client, session, factory, monkeypatch):
    customer = factory.customer()
    make_plan(session)
    _json_error(_raw(client, b"not json"), 400, "body")
    _json_error(client.post(EVENTS, data={"event_id": "e1"}, headers=AUTH), 400, "body")  # a form is no JSON
    _json_error(client.get("/api/v1/plans"), 401, "Authorization")
    _json_error(client.get("/api/v1/no-such-thing", headers=AUTH), 404)
    _json_error(client.get("/api/v1", headers=AUTH), 404)
    _json_error(client.get("/api/v1/customers/abc/billing-status", headers=AUTH), 404, "customer_id")
    not_allowed = _json_error(client.delete("/api/v1/plans", headers=AUTH), 405)
    assert not_allowed["error"] == "Method not allowed."
    allow = client.delete("/api/v1/plans", headers=AUTH).headers["Allow"]
    assert set(allow.split(", ")) == {"GET", "HEAD", "OPTIONS"}
    assert client.post(EVENTS, json=_created(customer.id), headers=AUTH).status_code == 201
    _json_error(client.post(EVENTS, json=_created(customer.id, name="other"), headers=AUTH), 409, "event_id")
    _json_error(_raw(client, b"[" + b" " * (70 * 1024) + b"]"), 413, "body")
    _json_error(client.post(EVENTS, json={**_created(customer.id, event_id="e2"), "customer_id": "7"}, headers=AUTH),
                422, "customer_id")

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr("app.web.api.can_deploy", broken)
    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)
    crashed = _json_error(client.get(f"/api/v1/customers/{customer.id}/can-deploy?plan=vm-small", headers=AUTH), 500)
    assert "secret" not in json.dumps(crashed)
    # pages outside the API keep their HTML error pages
    assert client.get("/no-such-page").mimetype == "text/html"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"event_id": {"nested": "dict"}}, "event_id"),
        ({"event_id": "   "}, "event_id"),
        ({"deployment_id": "dep\x00"}, "deployment_id"),
        ({"customer_id": 2**31}, "customer_id"),
        ({"customer_id": True}, "customer_id"),
        ({"customer_id": 1.5}, "customer_id"),
        ({"type": ["created"]}, "type"),
        ({"occurred_at": 1700000000}, "occurred_at"),
        ({"plan": "p" * 61}, "plan"),
        ({"name": "a\x00b"}, "name"),
        ({"name": [[[[[[[[[[["deep"]]]]]]]]]]]}, "name"),
        ({"extra": {"a": {"b": {"c": {}}}}}, "extra"),
    ],
)
def test_a_body_that_does_not_match_the_schema_is_refused_before_any_sql(app, client, session, factory, body, field):
    customer = factory.customer()
    make_plan(session)
    statements = []
    engine = app.extensions["paydesk_engine"]

    def count(*args):
        statements.append(args[2])

    sa_event.listen(engine, "before_cursor_execute", count)
    try:
        refused = client.post(EVENTS, json={**_created(customer.id), **body}, headers=AUTH)
        refused_statements = list(statements)
        accepted = client.post(EVENTS, json=_created(customer.id), headers=AUTH)
    finally:
        sa_event.remove(engine, "before_cursor_execute", count)
    error = _json_error(refused, 422, field)
    assert "\x00" not in error["error"] and "deep" not in error["error"]
    assert refused_statements == []
    assert accepted.status_code == 201 and len(statements) > 0  # the listener does see the database work


@pytest.mark.parametrize("when", ["2099-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "0001-01-01T00:00:00+00:00"])
def test_an_event_that_has_not_happened_yet_or_far_in_the_past_is_refused(client, session, factory, when):
    customer = factory.customer()
    make_plan(session)
    _json_error(client.post(EVENTS, json=_created(customer.id, occurred_at=when), headers=AUTH), 422, "occurred_at")
    assert _nothing_written(session)


def test_nested_json_is_a_400_never_a_recursion_error(client, session, factory):
    factory.customer()
    make_plan(session)
    deep = b"[" * 30_000 + b"]" * 30_000  # under 64 KiB, far deeper than Python's recursion limit
    _json_error(_raw(client, deep), 400, "body")
    deep_field = b'{"name": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    _json_error(_raw(client, deep_field), 400, "body")
    _json_error(_raw(client, b'"a string"'), 400, "body")
    assert _nothing_written(session)


@pytest.mark.parametrize(
    "change",
    [{"name": "web-2"}, {"name": None}, {"plan": "vm-medium"}, {"occurred_at": "2026-11-02T10:00:01Z"},
     {"deployment_id": "dep-2"}, {"type": "failed"}],
)
def test_the_same_event_id_with_different_content_is_a_409_and_the_same_content_an_idempotent_200(
    client, session, factory, change
):
    customer = factory.customer()
    make_plan(session)
    make_plan(session, size="medium")
    first = _created(customer.id)
    assert client.post(EVENTS, json=first, headers=AUTH).status_code == 201
    replay = client.post(EVENTS, json=first, headers=AUTH)
    assert replay.status_code == 200 and replay.get_json()["recorded"] is False
    different = {k: v for k, v in {**first, **change}.items() if v is not None}
    _json_error(client.post(EVENTS, json=different, headers=AUTH), 409, "event_id")
    session.expire_all()
    assert session.scalar(select(func.count(DeploymentEvent.id))) == 1
    assert session.scalar(select(Deployment.name)) == "web-1"
    assert session.scalar(select(DeploymentEvent.payload)) == {"plan": "vm-small", "name": "web-1"}


def test_the_same_event_id_for_another_customer_is_a_409(client, session, factory):
    one, two = factory.customer(), factory.customer()
    make_plan(session)
    assert client.post(EVENTS, json=_created(one.id), headers=AUTH).status_code == 201
    _json_error(client.post(EVENTS, json=_created(two.id), headers=AUTH), 409, "event_id")


@pytest.mark.parametrize("kind", ["created", "succeeded", "deleted"])
def test_an_admin_or_an_unknown_customer_id_is_a_404_and_writes_nothing(client, session, factory, kind):
    admin = factory.admin()
    make_plan(session)
    for customer_id in (admin.id, admin.id + 1000):
        body = {**_created(customer_id, event_id=f"{kind}-{customer_id}"), "type": kind}
        _json_error(client.post(EVENTS, json=body, headers=AUTH), 404, "customer_id")
        for path in ("can-deploy?plan=vm-small", "billing-status"):
            _json_error(client.get(f"/api/v1/customers/{customer_id}/{path}", headers=AUTH), 404, "customer_id")
    assert _nothing_written(session)
