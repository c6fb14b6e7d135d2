"""The gateway against the emulator: errors become typed, customer-safe errors, and a retried
charge with the same idempotency key never charges twice."""

import pytest
import stripe as stripe_sdk

from app.payments import gateway

pytestmark = pytest.mark.integration


@pytest.fixture
def saved_card(app, stripe_emulator):
    stripe_emulator.reset()
    sdk = stripe_sdk.StripeClient("sk_test_paydesk", base_addresses={"api": stripe_emulator.api_base})
    customer = sdk.v1.customers.create(params={"email": "gw@example.com"})
    pm = sdk.v1.payment_methods.create(params={"type": "card", "card": {
        "number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}})
    sdk.v1.payment_methods.attach(pm.id, params={"customer": customer.id})
    yield sdk, customer.id, pm.id
    stripe_emulator.clear_faults()


def _intents(sdk, customer_id):
    return [pi for pi in sdk.v1.payment_intents.list(params={"limit": 100}).data if pi.customer == customer_id]


def _charge(customer_id, pm_id, key):
    return gateway.charge_off_session(stripe_customer_id=customer_id, payment_method_id=pm_id, amount_cents=1234,
                                      currency="usd", idempotency_key=key)


@pytest.mark.parametrize("mode", ["error", "error_after_forward", "timeout"])
def test_a_charge_failing_at_stripe_is_unknown_and_the_retry_charges_once(app, stripe_emulator, saved_card, mode):
    sdk, customer_id, pm_id = saved_card
    stripe_emulator.set_fault("/v1/payment_intents", mode, delay=3)
    app.config["STRIPE_TIMEOUT_SECONDS"] = 1
    try:
        with pytest.raises(gateway.PaymentOutcomeUnknown) as failure:
            _charge(customer_id, pm_id, "invoice-1-attempt-1")
    finally:
        app.config.pop("STRIPE_TIMEOUT_SECONDS")
    assert "did not answer" in str(failure.value)
    charge = _charge(customer_id, pm_id, "invoice-1-attempt-1")
    again = _charge(customer_id, pm_id, "invoice-1-attempt-1")
    assert charge.status == "succeeded" and again.payment_intent_id == charge.payment_intent_id
    assert len(_intents(sdk, customer_id)) == 1


def test_a_declined_card_is_a_typed_error_with_a_customer_message(app, stripe_emulator):
    stripe_emulator.reset()
    sdk = stripe_sdk.StripeClient("sk_test_paydesk", base_addresses={"api": stripe_emulator.api_base})
    customer = sdk.v1.customers.create(params={"email": "declined@example.com"})
    pm = sdk.v1.payment_methods.create(params={"type": "card", "card": {
        "number": "4000000000000341", "exp_month": 12, "exp_year": 2034, "cvc": "123"}})
    sdk.v1.payment_methods.attach(pm.id, params={"customer": customer.id})
    with pytest.raises(gateway.CardDeclined, match="Your card was declined."):
        _charge(customer.id, pm.id, "declined-1")


def test_non_money_calls_turn_outages_into_a_clear_message(app, stripe_emulator):
    stripe_emulator.reset()
    stripe_emulator.set_fault("/v1/customers", "error")
    with pytest.raises(gateway.PaymentProviderUnavailable, match="not reachable right now"):
        gateway.create_customer(email="x@example.com", name=None, customer_id=1, idempotency_key="c-1")
    stripe_emulator.clear_faults()
    with pytest.raises(gateway.PaymentRequestInvalid):
        gateway.retrieve_checkout_session("cs_missing")
