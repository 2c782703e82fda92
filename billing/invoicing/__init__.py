"""Plans, subscriptions, billing periods and invoices."""
