"""One module per payment provider; ``billing.payments.registry`` lists them."""
