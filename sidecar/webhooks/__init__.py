"""Signed webhooks delivered at least once from a durable outbox (see docs/webhooks.md)."""
