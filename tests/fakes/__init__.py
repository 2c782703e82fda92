"""Test doubles for the services the billing service talks to."""

from tests.fakes.stripe_server import TEST_CARDS, FakeStripe, Fault, RecordedRequest, fake_stripe

__all__ = ["TEST_CARDS", "FakeStripe", "Fault", "RecordedRequest", "fake_stripe"]
