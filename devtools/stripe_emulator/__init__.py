"""Dev/test Stripe emulator: localstripe (run as a child process) behind a front service that adds
Checkout Sessions, Idempotency-Key handling, a merged events list and fault injection.

See README.md in this directory. Use :func:`devtools.stripe_emulator.process.start_emulator` from tests.
"""
