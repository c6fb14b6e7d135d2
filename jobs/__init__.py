"""Background jobs. Importing the package registers the after-commit hooks app.billing calls."""

import jobs.refunds  # noqa: F401,E402  (registers the refund sender)
