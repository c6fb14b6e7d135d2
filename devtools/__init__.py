"""Developer and test tooling for Paydesk (not shipped to production)."""
