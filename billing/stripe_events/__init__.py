"""Stripe webhooks: verify, filter, store-then-acknowledge, and process asynchronously."""
