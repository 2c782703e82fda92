"""Dunning: what happens after a failed payment (retries, emails, escalation), and card lifecycle notices."""
