"""The dev/test Stripe emulator (devtools/stripe_emulator): localstripe + Checkout, idempotency, faults.

Self-contained: starts its own emulator process, uses no conftest fixture.
"""

import json
import queue
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import stripe

from devtools.stripe_emulator.process import start_emulator

pytestmark = pytest.mark.integration

API_KEY = "sk_test_emulator_tests"
SUCCESS = "http://paydesk.test/cards/done?session_id={CHECKOUT_SESSION_ID}"
CANCEL = "http://paydesk.test/cards"


@pytest.fixture(scope="module")
def em():
    emulator = start_emulator()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(autouse=True)
def _clean(em):
    em.reset()
    yield


@pytest.fixture
def client(em):
    return stripe.StripeClient(API_KEY, base_addresses={"api": em.api_base}, max_network_retries=0)


@pytest.fixture
def customer(client):
    return client.v1.customers.create({"email": "ada@example.com", "name": "Ada"})


def card_pm(client, customer_id: str, number: str = "4242424242424242") -> str:
    pm = client.v1.payment_methods.create(
        {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}})
    client.v1.payment_methods.attach(pm.id, {"customer": customer_id})
    return pm.id


def all_payment_intents(client) -> list:
    return list(client.v1.payment_intents.list({"limit": 100}).data)


def setup_session(client, customer_id: str):
    return client.v1.checkout.sessions.create({
        "mode": "setup", "customer": customer_id, "currency": "usd", "payment_method_types": ["card"],
        "success_url": SUCCESS, "cancel_url": CANCEL, "client_reference_id": "42",
        "metadata": {"paydesk_purpose": "card"}, "setup_intent_data": {"metadata": {"paydesk_customer": "42"}},
    })


def payment_session(client, customer_id: str, amount: int = 2500):
    return client.v1.checkout.sessions.create({
        "mode": "payment", "customer": customer_id, "payment_method_types": ["card"],
        "success_url": SUCCESS, "cancel_url": CANCEL,
        "line_items": [{"price_data": {"currency": "usd", "unit_amount": amount,
                                       "product_data": {"name": "Balance top-up"}}, "quantity": 1}],
        "payment_intent_data": {"metadata": {"paydesk_purpose": "topup", "topup_id": "7"}},
        "metadata": {"paydesk_purpose": "topup"},
    })


def pay(url: str, number: str, exp: str = "12 / 34", cvc: str = "123") -> requests.Response:
    return requests.post(url, data={"cardnumber": number, "exp": exp, "cvc": cvc}, allow_redirects=False,
                         timeout=10)


# ----------------------------------------------------------------------------------------------------------
# Checkout


def test_setup_mode_saves_card_and_redirects(client, customer):
    cs = setup_session(client, customer.id)
    assert cs.id.startswith("cs_test_") and cs.object == "checkout.session"
    assert cs.status == "open" and cs.mode == "setup" and cs.url.endswith(f"/checkout/{cs.id}")

    page = requests.get(cs.url, timeout=10)
    assert page.status_code == 200
    for marker in ('id="cardnumber"', 'id="exp"', 'id="cvc"', 'id="submit"', 'id="cancel"', CANCEL):
        assert marker in page.text

    resp = pay(cs.url, "4242 4242 4242 4242")
    assert resp.status_code == 303
    assert resp.headers["Location"] == SUCCESS.replace("{CHECKOUT_SESSION_ID}", cs.id)

    done = client.v1.checkout.sessions.retrieve(cs.id, {"expand": ["setup_intent"]})
    assert done.status == "complete" and done.payment_status == "no_payment_required"
    assert done.setup_intent.status == "succeeded"
    assert done.setup_intent.metadata["paydesk_customer"] == "42"
    assert done.client_reference_id == "42" and done.metadata["paydesk_purpose"] == "card"

    cards = client.v1.payment_methods.list({"customer": customer.id, "type": "card"}).data
    assert len(cards) == 1
    assert cards[0].id == done.setup_intent.payment_method
    assert cards[0].card.last4 == "4242" and cards[0].card.fingerprint
    assert (cards[0].card.exp_month, cards[0].card.exp_year) == (12, 2034)

    again = requests.get(cs.url, timeout=10)
    assert again.status_code == 409  # a completed session no longer takes cards


def test_payment_mode_charges_with_metadata(client, customer):
    cs = payment_session(client, customer.id, 2500)
    assert cs.amount_total == 2500 and cs.currency == "usd" and cs.payment_status == "unpaid"
    assert "25.00 USD" in requests.get(cs.url, timeout=10).text

    resp = pay(cs.url, "4242424242424242", exp="12/34")
    assert resp.status_code == 303

    done = client.v1.checkout.sessions.retrieve(cs.id, {"expand": ["payment_intent"]})
    assert done.status == "complete" and done.payment_status == "paid"
    pi = done.payment_intent
    assert pi.status == "succeeded" and pi.amount == 2500 and pi.customer == customer.id
    assert pi.metadata["paydesk_purpose"] == "topup" and pi.metadata["topup_id"] == "7"


@pytest.mark.parametrize("number", ["4000000000000002", "4000000000000341"])
def test_declined_card_keeps_session_open(client, customer, number):
    cs = payment_session(client, customer.id)
    resp = pay(cs.url, number)
    assert resp.status_code == 402
    assert 'id="error"' in resp.text and "Your card was declined." in resp.text

    again = client.v1.checkout.sessions.retrieve(cs.id)
    assert again.status == "open" and again.payment_status == "unpaid"
    assert not [pi for pi in all_payment_intents(client) if pi.status == "succeeded"]

    assert pay(cs.url, "4242424242424242").status_code == 303  # a good card still works afterwards


def test_three_d_secure_complete_and_fail(client, customer):
    cs = setup_session(client, customer.id)
    page = pay(cs.url, "4000002500003155")
    assert page.status_code == 200 and 'id="authenticate-complete"' in page.text
    assert 'id="authenticate-fail"' in page.text
    done = requests.post(f"{cs.url}/authenticate", data={"result": "complete"}, allow_redirects=False,
                         timeout=10)
    assert done.status_code == 303
    assert client.v1.checkout.sessions.retrieve(cs.id).status == "complete"
    assert [c.card.last4 for c in client.v1.payment_methods.list(
        {"customer": customer.id, "type": "card"}).data] == ["3155"]

    cs = payment_session(client, customer.id, 900)
    assert 'id="authenticate-fail"' in pay(cs.url, "4000002500003155").text
    failed = requests.post(f"{cs.url}/authenticate", data={"result": "fail"}, allow_redirects=False,
                           timeout=10)
    assert 'id="error"' in failed.text
    assert client.v1.checkout.sessions.retrieve(cs.id).status == "open"
    assert pay(cs.url, "4000002500003155").status_code == 200
    ok = requests.post(f"{cs.url}/authenticate", data={"result": "complete"}, allow_redirects=False,
                       timeout=10)
    assert ok.status_code == 303
    pi = client.v1.checkout.sessions.retrieve(cs.id, {"expand": ["payment_intent"]}).payment_intent
    assert pi.status == "succeeded" and pi.amount == 900


def test_unknown_session_and_expire(client, customer):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.checkout.sessions.retrieve("cs_test_nope")
    assert exc.value.http_status == 404 and exc.value.code == "resource_missing"

    cs = setup_session(client, customer.id)
    expired = client.v1.checkout.sessions.expire(cs.id)
    assert expired.status == "expired"
    assert pay(cs.url, "4242424242424242").status_code == 410


# ----------------------------------------------------------------------------------------------------------
# webhooks and events


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.put((body, self.headers.get("Stripe-Signature")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = queue.Queue()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_webhook_delivery_is_signed(em, client, customer, receiver):
    secret = "whsec_emulator_test"
    url = f"http://127.0.0.1:{receiver.server_address[1]}/stripe/webhook"
    em.add_webhook(url, secret, events=["checkout.session.completed"])

    cs = payment_session(client, customer.id, 1200)
    assert pay(cs.url, "4242424242424242").status_code == 303

    payload, sig = receiver.received.get(timeout=5)
    event = stripe.Webhook.construct_event(payload, sig, secret)
    assert event.type == "checkout.session.completed" and event.id.startswith("evt_")
    assert event.data.object.id == cs.id and event.data.object.payment_status == "paid"
    assert event.livemode is False and event.api_version
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, sig, "whsec_wrong")


def test_webhook_failure_does_not_break_redirect(em, client, customer):
    em.add_webhook("http://127.0.0.1:9/unreachable", "whsec_x")
    cs = setup_session(client, customer.id)
    assert pay(cs.url, "4242424242424242").status_code == 303


def test_events_list_merges_checkout_events(client, customer):
    cs = payment_session(client, customer.id)
    assert pay(cs.url, "4242424242424242").status_code == 303

    completed = client.v1.events.list({"type": "checkout.session.completed"}).data
    assert [e.data.object.id for e in completed] == [cs.id]
    assert client.v1.events.retrieve(completed[0].id).type == "checkout.session.completed"

    events = client.v1.events.list({"limit": 100}).data
    types = [e.type for e in events]
    assert "checkout.session.completed" in types and "payment_intent.succeeded" in types
    assert "customer.created" in types
    created = [e.created for e in events]
    assert created == sorted(created, reverse=True)

    first = client.v1.events.list({"limit": 1})
    assert len(first.data) == 1 and first.has_more
    rest = client.v1.events.list({"limit": 100, "starting_after": first.data[0].id}).data
    assert [e.id for e in rest] == [e.id for e in events[1:]]


# ----------------------------------------------------------------------------------------------------------
# idempotency and faults


def charge(client, customer_id, pm_id, key, amount=2500):
    return client.v1.payment_intents.create(
        {"amount": amount, "currency": "usd", "customer": customer_id, "payment_method": pm_id,
         "confirm": True, "off_session": True, "metadata": {"attempt": key}},
        {"idempotency_key": key})


def test_idempotency_key_replays_and_rejects_other_params(client, customer):
    pm = card_pm(client, customer.id)
    key = str(uuid.uuid4())
    first = charge(client, customer.id, pm, key)
    second = charge(client, customer.id, pm, key)
    assert first.id == second.id and second.status == "succeeded"
    assert len(all_payment_intents(client)) == 1

    with pytest.raises((stripe.IdempotencyError, stripe.InvalidRequestError)) as exc:
        charge(client, customer.id, pm, key, amount=999)
    assert exc.value.http_status == 400
    assert len(all_payment_intents(client)) == 1

    other = charge(client, customer.id, pm, str(uuid.uuid4()))
    assert other.id != first.id


def test_idempotency_validation_errors_are_not_saved(client, customer):
    pm = card_pm(client, customer.id)
    key = str(uuid.uuid4())
    with pytest.raises(stripe.InvalidRequestError):
        charge(client, customer.id, "pm_missing", key)
    assert charge(client, customer.id, pm, key).status == "succeeded"


def test_idempotency_concurrent_same_key(client, customer):
    pm = card_pm(client, customer.id)
    key = str(uuid.uuid4())
    with ThreadPoolExecutor(10) as pool:
        ids = set(pool.map(lambda _: charge(client, customer.id, pm, key).id, range(10)))
    assert len(ids) == 1
    assert len(all_payment_intents(client)) == 1


def test_fault_error_after_forward_then_retry(em, client, customer):
    pm = card_pm(client, customer.id)
    key = str(uuid.uuid4())
    em.set_fault("/v1/payment_intents", "error_after_forward")
    with pytest.raises(stripe.APIError):
        charge(client, customer.id, pm, key)
    assert len(all_payment_intents(client)) == 1  # the charge did happen

    retried = charge(client, customer.id, pm, key)
    assert retried.status == "succeeded"
    pis = all_payment_intents(client)
    assert [p.id for p in pis] == [retried.id]


def test_fault_error_creates_nothing(em, client, customer):
    pm = card_pm(client, customer.id)
    em.set_fault("/v1/payment_intents", "error", count=1)
    with pytest.raises(stripe.APIError):
        charge(client, customer.id, pm, str(uuid.uuid4()))
    assert all_payment_intents(client) == []
    assert charge(client, customer.id, pm, str(uuid.uuid4())).status == "succeeded"  # count consumed


def test_fault_timeout_and_clear(em, client, customer):
    pm = card_pm(client, customer.id)
    em.set_fault("/v1/payment_intents", "timeout", delay=2)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(f"{em.api_base}/v1/payment_intents", auth=(API_KEY, ""), timeout=0.5,
                      data={"amount": 100, "currency": "usd", "payment_method": pm, "confirm": "true"})
    assert time.monotonic() - started < 2
    assert all_payment_intents(client) == []

    em.set_fault("/v1/payment_intents", "error", count=5)
    em.clear_faults()
    assert charge(client, customer.id, pm, str(uuid.uuid4())).status == "succeeded"


def test_reset_clears_sessions_and_passthrough_keeps_status(em, client, customer):
    cs = setup_session(client, customer.id)
    em.reset()
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.retrieve(cs.id)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.retrieve(customer.id)
    assert exc.value.http_status == 404
    assert requests.get(f"{em.api_base}/v1/customers", timeout=5).status_code == 401


def test_hosted_page_success_url_placeholder(client, customer):
    cs = setup_session(client, customer.id)
    location = pay(cs.url, "4242424242424242").headers["Location"]
    assert parse_qs(urlsplit(location).query)["session_id"] == [cs.id]
    assert json.loads(json.dumps(client.v1.checkout.sessions.retrieve(cs.id).success_url)) == SUCCESS
