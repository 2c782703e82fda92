"""Customers: who is billed, how to reach them, how they pay, and their payment status."""
