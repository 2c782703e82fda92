"""The pure parts of Idempotency-Key: which keys are valid, when two bodies are the same body."""

from __future__ import annotations

import pytest

from billing.web.idempotency import InvalidIdempotencyKey, idempotency_key, request_hash


def scope_with(*headers: tuple[bytes, bytes]) -> dict:
    return {"headers": [(b"content-type", b"application/json"), *headers]}


@pytest.mark.parametrize("key", [b"a", b"k" * 255, b"order 42/retry:1", b" ~!\"#$%&'()*+,-./"])
def test_one_to_255_printable_ascii_characters_are_a_key(key: bytes) -> None:
    assert idempotency_key(scope_with((b"idempotency-key", key))) == key.decode()


@pytest.mark.parametrize("key", [b"", b"k" * 256, b"tab\there", b"nul\x00", b"del\x7f", "café".encode()])
def test_anything_else_is_refused(key: bytes) -> None:
    with pytest.raises(InvalidIdempotencyKey):
        idempotency_key(scope_with((b"idempotency-key", key)))


def test_no_header_is_no_key() -> None:
    assert idempotency_key(scope_with()) is None


def test_json_bodies_are_the_same_whatever_their_spacing_and_key_order() -> None:
    assert request_hash(b'{"a": 1, "b": {"y": [1, 2], "x": "s"}}') == request_hash(
        b'{"b":{"x":"s","y":[1,2]},\n "a":1}'
    )


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (b'{"a": 1}', b'{"a": 2}'),
        (b'{"a": [1, 2]}', b'{"a": [2, 1]}'),
        (b'{"a": 1.5}', b'{"a": "1.5"}'),
        (b'{"a": 1.50}', b'{"a": 1.5}'),  # numbers compare as written: never rounded into one
        (b'{"n": 12345678901234567890123}', b'{"n": 12345678901234567890124}'),
        (b"not json", b"not  json"),
        (b"", b"null"),
    ],
)
def test_bodies_that_differ_have_different_hashes(one: bytes, other: bytes) -> None:
    assert request_hash(one) != request_hash(other)


def test_a_body_that_is_not_json_compares_by_its_bytes() -> None:
    assert request_hash(b"a=1&b=2") == request_hash(b"a=1&b=2")
    assert request_hash(b"a=1&b=2") != request_hash(b"b=2&a=1")
