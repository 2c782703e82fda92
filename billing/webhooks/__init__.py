"""Outgoing webhooks to tenants: endpoints, the outbox consumer that queues deliveries, and the
dispatcher that signs (Standard Webhooks) and sends them, at least once, with backoff."""
