"""Prepaid credits: grants a customer's invoices draw on, and the append-only ledger of their balance."""
