"""Platform API (/api/v1): auth, lifecycle events, can-deploy, billing status, OpenAPI conformance."""

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import func, select

from app.billing.usage import mark_customer_deployments_for_deletion
from app.models import User
from app.models.usage import Deployment, DeploymentEvent
from tests.conftest import PLATFORM_TOKEN
from tests.integration.usage_helpers import add_card, make_plan

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}


def _post(client, body, headers=AUTH):
    return client.post("/api/v1/deployment-events", json=body, headers=headers)


def _created(customer, event_id="e1", deployment="dep-1", when="2026-11-02T10:00:00Z", **extra):
    return {"event_id": event_id, "deployment_id": deployment, "customer_id": customer.id, "type": "created",
            "occurred_at": when, "plan": "vm-small", "name": "web-1", **extra}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": PLATFORM_TOKEN}])
def test_wrong_or_missing_token_is_401(client, headers):
    for response in (client.get("/api/v1/plans", headers=headers), _post(client, {}, headers)):
        assert response.status_code == 401
        assert response.get_json()["field"] == "Authorization"


def test_events_are_recorded_once_and_snapshot_the_price(client, session, factory):
    customer = factory.customer()
    make_plan(session, price="0.123456")
    first = _post(client, _created(customer))
    replay = _post(client, _created(customer))
    assert (first.status_code, replay.status_code) == (201, 200)
    assert first.get_json()["deployment"] == {
        "deployment_id": "dep-1", "customer_id": customer.id, "name": "web-1", "plan": "vm-small",
        "hourly_price": "0.123456", "state": "in_progress", "marked_for_deletion_at": None, "deletion_reason": None,
    }
    assert replay.get_json()["recorded"] is False
    ok = _post(client, {"event_id": "e2", "deployment_id": "dep-1", "customer_id": customer.id, "type": "succeeded",
                        "occurred_at": "2026-11-02T10:05:00+00:00"})
    assert ok.status_code == 201 and ok.get_json()["deployment"]["state"] == "running"
    assert session.scalar(select(func.count(DeploymentEvent.id))) == 2


def test_out_of_order_and_impossible_events_are_rejected_with_409_and_write_nothing(client, session, factory):
    customer = factory.customer()
    make_plan(session)
    orphan = _post(client, {"event_id": "x0", "deployment_id": "nope", "customer_id": customer.id,
                            "type": "succeeded", "occurred_at": "2026-11-02T10:00:00Z"})
    assert orphan.status_code == 409 and orphan.get_json()["field"] == "deployment_id"
    assert _post(client, _created(customer)).status_code == 201
    older = _post(client, {"event_id": "x1", "deployment_id": "dep-1", "customer_id": customer.id,
                           "type": "succeeded", "occurred_at": "2026-11-02T09:00:00Z"})
    assert older.status_code == 409 and older.get_json()["field"] == "occurred_at"
    impossible = _post(client, {"event_id": "x2", "deployment_id": "dep-1", "customer_id": customer.id,
                                "type": "resumed", "occurred_at": "2026-11-02T11:00:00Z"})
    assert impossible.status_code == 409 and impossible.get_json()["field"] == "type"
    reused = _post(client, _created(customer, when="2026-11-03T00:00:00Z"))
    assert reused.status_code == 409 and reused.get_json()["field"] == "event_id"
    assert session.scalar(select(func.count(DeploymentEvent.id))) == 1
    assert session.scalar(select(Deployment.state)) == "in_progress"


@pytest.mark.parametrize(
    "change, field",
    [
        ({"plan": "vm-gigantic"}, "plan"),
        ({"plan": None}, "plan"),
        ({"customer_id": "12"}, "customer_id"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"occurred_at": "2026-11-02T10:00:00"}, "occurred_at"),
        ({"type": "exploded"}, "type"),
        ({"event_id": ""}, "event_id"),
    ],
)
def test_bad_input_gets_a_4xx_naming_the_field_and_writes_nothing(client, session, factory, change, field):
    customer = factory.customer()
    make_plan(session)
    body = {k: v for k, v in {**_created(customer), **change}.items() if v is not None}
    response = _post(client, body)
    assert 400 <= response.status_code < 500
    assert response.get_json()["field"] == field
    assert session.scalar(select(func.count(Deployment.id))) == 0


def test_can_deploy_and_billing_status(client, session, factory):
    customer = factory.customer()
    make_plan(session, price="0.100000")
    no = client.get(f"/api/v1/customers/{customer.id}/can-deploy?plan=vm-small", headers=AUTH).get_json()
    assert (no["allowed"], no["code"]) == (False, "no_payment_method") and no["reason"]
    add_card(session, customer)
    yes = client.get(f"/api/v1/customers/{customer.id}/can-deploy?plan=vm-small", headers=AUTH).get_json()
    assert (yes["allowed"], yes["code"], yes["reason"]) == (True, "card", None)
    assert _post(client, _created(customer)).status_code == 201
    marked = mark_customer_deployments_for_deletion(session, customer.id, "unpaid for 3 months")
    session.commit()
    status = client.get(f"/api/v1/customers/{customer.id}/billing-status", headers=AUTH).get_json()
    assert status["deletion_scheduled"] is True and status["blocked"] is False
    assert [d["deployment_id"] for d in status["deployments_marked_for_deletion"]] == ["dep-1"]
    assert status["deployments_marked_for_deletion"][0]["deletion_reason"] == "unpaid for 3 months"
    assert marked == [session.scalar(select(Deployment.id))]
    assert status["hourly_cost_cents"] == "10.000000"
    missing = client.get("/api/v1/customers/999999/billing-status", headers=AUTH)
    assert missing.status_code == 404 and missing.get_json()["field"] == "customer_id"


def test_openapi_document_matches_real_responses(app, session, factory):
    import schemathesis
    from hypothesis import given

    customer = factory.customer()
    make_plan(session)
    make_plan(session, size="medium")
    add_card(session, customer)
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    checks = [schemathesis.checks.not_a_server_error]
    from schemathesis.specs.openapi import checks as oa

    checks += [oa.response_schema_conformance, oa.status_code_conformance, oa.content_type_conformance]
    failures = []
    for operation in schema.get_all_operations():
        op = operation.ok()

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy())
        def check(case):
            case.headers = {**(case.headers or {}), **AUTH}
            if "customer_id" in (case.path_parameters or {}):
                case.path_parameters["customer_id"] = customer.id
            response = case.call()
            try:
                case.validate_response(response, checks=checks)
            except Exception as exc:
                failures.append(str(exc)[:500])
                raise

        check()
    assert failures == []


def test_the_platform_finds_a_customer_by_email_and_by_the_external_ref_it_set(client, session, factory):
    from app.models import AuditLog

    customer = factory.customer(email="Erin@Example.com")
    other = factory.customer(email="frank@example.com")
    factory.admin()
    session.commit()

    found = client.get("/api/v1/customers?email=%20ERIN@example.COM%20", headers=AUTH)
    assert found.status_code == 200
    assert found.get_json() == {"customers": [{"customer_id": customer.id, "email": "erin@example.com",
                                               "name": None, "external_ref": None}]}
    assert client.get("/api/v1/customers?email=nobody@example.com", headers=AUTH).get_json() == {"customers": []}
    assert client.get("/api/v1/customers?email=root@example.com", headers=AUTH).get_json() == {"customers": []}

    put = client.put(f"/api/v1/customers/{customer.id}/external-ref", json={"external_ref": "acct-42"}, headers=AUTH)
    assert put.status_code == 200 and put.get_json()["external_ref"] == "acct-42"
    again = client.put(f"/api/v1/customers/{customer.id}/external-ref", json={"external_ref": "acct-42"}, headers=AUTH)
    assert again.status_code == 200  # idempotent
    by_ref = client.get("/api/v1/customers?external_ref=acct-42", headers=AUTH).get_json()["customers"]
    assert [c["customer_id"] for c in by_ref] == [customer.id]
    assert client.get(f"/api/v1/customers/{customer.id}", headers=AUTH).get_json()["external_ref"] == "acct-42"

    taken = client.put(f"/api/v1/customers/{other.id}/external-ref", json={"external_ref": "acct-42"}, headers=AUTH)
    assert taken.status_code == 409 and taken.get_json()["field"] == "external_ref"
    session.expire_all()
    assert session.get(User, other.id).external_ref is None
    audits = session.scalars(select(AuditLog).where(AuditLog.action == "customer.external_ref")).all()
    assert [(a.before, a.after) for a in audits] == [({"external_ref": None}, {"external_ref": "acct-42"})]

    cleared = client.put(f"/api/v1/customers/{customer.id}/external-ref", json={"external_ref": None}, headers=AUTH)
    assert cleared.status_code == 200 and cleared.get_json()["external_ref"] is None
    assert client.get("/api/v1/customers?external_ref=acct-42", headers=AUTH).get_json() == {"customers": []}


def test_customer_lookups_refuse_bad_input_with_the_field_named(client, session, factory):
    customer = factory.customer()
    cases = [
        ("get", "/api/v1/customers", None, 422, "email"),
        ("get", "/api/v1/customers?email=a@b.com&external_ref=x", None, 422, "external_ref"),
        ("get", "/api/v1/customers?email=" + "a" * 300, None, 422, "email"),
        ("get", "/api/v1/customers?external_ref=%00x", None, 422, "external_ref"),
        ("put", f"/api/v1/customers/{customer.id}/external-ref", {"external_ref": ""}, 422, "external_ref"),
        ("put", f"/api/v1/customers/{customer.id}/external-ref", {"external_ref": "x" * 121}, 422, "external_ref"),
        ("put", f"/api/v1/customers/{customer.id}/external-ref", {"ref": "x"}, 422, "ref"),
        ("put", f"/api/v1/customers/{customer.id}/external-ref", {"external_ref": 7}, 422, "external_ref"),
        ("put", "/api/v1/customers/999999/external-ref", {"external_ref": "x"}, 404, "customer_id"),
        ("get", "/api/v1/customers/999999", None, 404, "customer_id"),
    ]
    for method, path, body, status, field in cases:
        response = getattr(client, method)(path, json=body, headers=AUTH) if body is not None else \
            getattr(client, method)(path, headers=AUTH)
        assert (response.status_code, response.get_json()["field"]) == (status, field), (path, body, response.get_json())
    assert client.get("/api/v1/customers?email=a@b.com").status_code == 401
    session.expire_all()
    assert session.get(User, customer.id).external_ref is None
