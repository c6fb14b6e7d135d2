"""Platform API (/api/v1): auth, lifecycle events, can-deploy, billing status, OpenAPI conformance."""

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import func, select

from app.billing.usage import mark_customer_deployments_for_deletion
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
