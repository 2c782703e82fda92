"""Charging invoices through payment providers: attempts, outcomes, reconciliation and refunds."""
