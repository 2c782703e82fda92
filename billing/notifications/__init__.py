"""Customer and tenant emails: rendered when queued, delivered by a claimed dispatcher.

Importing the package registers its outbox consumer (``webhook_endpoint.disabled``), so that
every process that emits that topic or runs the outbox tick knows about it.
"""

from billing.notifications import tenant_events as _tenant_events  # noqa: F401 (registers the consumer)
