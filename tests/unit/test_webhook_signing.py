"""Standard Webhooks signatures: the spec's example, an independent HMAC, and the reference verifier."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from billing.webhooks import signing

# The example of the Standard Webhooks specification (and of its reference libraries' tests).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = '{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_signature_of_the_specification_example() -> None:
    assert signing.signature([SPEC_SECRET], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_the_signature_is_hmac_sha256_of_id_timestamp_and_body_keyed_with_the_decoded_secret() -> None:
    key = base64.b64decode(SPEC_SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{SPEC_ID}.{SPEC_TIMESTAMP}.{SPEC_BODY}".encode(), hashlib.sha256).digest()
    assert f"v1,{base64.b64encode(digest).decode()}" == SPEC_SIGNATURE


def test_new_secrets_are_whsec_and_32_random_bytes() -> None:
    first, second = signing.new_secret(), signing.new_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 32


def test_the_reference_library_verifies_our_headers_and_rejects_tampering() -> None:
    secret, body = signing.new_secret(), '{"id":"evt_1","type":"invoice.paid"}'
    headers = signing.headers([secret], "evt_1", int(time.time()), body)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert Webhook(secret).verify(body, headers) == {"id": "evt_1", "type": "invoice.paid"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("paid", "voided"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers | {"webhook-id": "evt_2"})


def test_during_a_rotation_both_secrets_sign_and_either_verifies() -> None:
    new, old, body = signing.new_secret(), signing.new_secret(), "{}"
    headers = signing.headers([new, old], "evt_1", int(time.time()), body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert all(s.startswith("v1,") for s in headers["webhook-signature"].split(" "))
    Webhook(new).verify(body, headers)
    Webhook(old).verify(body, headers)
