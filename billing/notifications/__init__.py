"""Customer and tenant emails: rendered when queued, delivered by a claimed dispatcher."""
