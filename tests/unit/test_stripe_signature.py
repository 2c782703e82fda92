"""Stripe-Signature verification against headers made by stripe-python itself."""

from __future__ import annotations

import time

import stripe
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.stripe_events.signature import TOLERANCE_SECONDS, parse_header, sign, verify

SECRET = "whsec_unit_0123456789abcdef0123456789abcdef"
OTHER = "whsec_unit_fedcba9876543210fedcba9876543210"
NOW = 1_795_000_000


def header(payload: str, secret: str = SECRET, at: int = NOW) -> str:
    return str(stripe.WebhookSignature.generate_signature_header(payload, secret, at))


def test_a_header_made_by_stripe_python_verifies_against_the_raw_bytes() -> None:
    payload = '{\n  "id": "evt_1",\n  "object": "event"\n}'
    assert verify(payload.encode(), header(payload), [SECRET.encode()], now=NOW)
    # and our signature is the SDK's, byte for byte
    assert (
        header(payload) == f"t={NOW},v1={sign(payload.encode(), SECRET.encode(), str(NOW).encode()).decode()}"
    )


@settings(max_examples=200, deadline=None)
@given(
    payload=st.text(max_size=300),
    skew=st.integers(-TOLERANCE_SECONDS, TOLERANCE_SECONDS),
    position=st.integers(0, 10_000),
)
def test_any_payload_verifies_and_any_one_byte_change_does_not(
    payload: str, skew: int, position: int
) -> None:
    signed = header(payload, at=NOW + skew)
    raw = payload.encode()
    assert verify(raw, signed, [SECRET.encode()], now=NOW)
    assert stripe.WebhookSignature.verify_header(payload, signed, SECRET)  # the SDK agrees (no time check)
    tampered = bytearray(raw + b" ")
    index = position % len(tampered)
    tampered[index] ^= 0x01
    assert not verify(bytes(tampered), signed, [SECRET.encode()], now=NOW)
    assert not verify(raw, signed, [OTHER.encode()], now=NOW)


@settings(max_examples=100, deadline=None)
@given(skew=st.integers(TOLERANCE_SECONDS + 1, 10**9), sign_of=st.sampled_from([-1, 1]))
def test_timestamps_beyond_the_tolerance_fail_in_both_directions(skew: int, sign_of: int) -> None:
    payload = '{"id": "evt_1"}'
    at = NOW + sign_of * skew
    assert not verify(payload.encode(), header(payload, at=at), [SECRET.encode()], now=NOW)


def test_the_sdk_would_accept_a_future_timestamp_we_refuse() -> None:
    payload = '{"id": "evt_1"}'
    real_now = int(time.time())  # the SDK reads the real clock
    future = header(payload, at=real_now + 3600)
    # stripe-python's tolerance check is one-sided: a header from the future passes it.
    assert stripe.WebhookSignature.verify_header(payload, future, SECRET, tolerance=TOLERANCE_SECONDS)
    assert not verify(payload.encode(), future, [SECRET.encode()], now=real_now)


def test_any_of_several_secrets_and_any_of_several_v1_is_enough() -> None:
    payload = '{"id": "evt_1"}'
    old_v1 = header(payload, OTHER).split("v1=")[1]
    rolled = f"{header(payload)},v1={old_v1}"
    assert verify(payload.encode(), rolled, [OTHER.encode()], now=NOW)
    assert verify(payload.encode(), rolled, [SECRET.encode()], now=NOW)
    assert verify(payload.encode(), header(payload), [OTHER.encode(), SECRET.encode()], now=NOW)
    assert not verify(payload.encode(), header(payload), [], now=NOW)


def test_parse_header_is_strict() -> None:
    v1 = "ab" * 32
    assert parse_header(f"t={NOW},v1={v1},v0={v1}") is not None
    assert parse_header(f"t={NOW},v1={v1},v2=whatever") is not None  # unknown schemes are ignored
    refused = [
        None,
        "",
        f"t={NOW}",  # no v1
        f"t={NOW},v0={v1}",  # v0 only
        f"v1={v1}",  # no t
        f"t={NOW},t={NOW},v1={v1}",  # two t
        f"t=-{NOW},v1={v1}",
        f"t= {NOW},v1={v1}",
        f"t={NOW}, v1={v1}",  # stripe's libraries do not trim, nor do we
        f"t={NOW},v1={v1.upper()}",
        f"t={NOW},v1={v1[:-1]}",
        f"t={NOW},v1={v1},junk",
        f"t={NOW},=x,v1={v1}",
        f"t={NOW}," + ",".join([f"v1={v1}"] * 9),  # more than any rotation needs
        f"t={NOW},v1={v1}," + "x" * 3000,
        f"t={NOW},v1={v1},n=\u00e9",
    ]
    for value in refused:
        assert parse_header(value) is None, value
