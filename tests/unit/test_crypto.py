from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.core.crypto import SecretBox, SecretDecryptionError

KEY_A = "key-a-0123456789abcdefghijklmnopqrstuv"
KEY_B = "key-b-0123456789abcdefghijklmnopqrstuv"
STRIPE_KEY = "sk_test_51HqzYbCdEfGhIjKlMnOpQrStUv"

BOX_A = SecretBox([KEY_A])


@given(st.text())
def test_encrypt_then_decrypt_gives_back_any_text(plaintext: str) -> None:
    assert BOX_A.decrypt(BOX_A.encrypt(plaintext)) == plaintext


def test_ciphertext_does_not_contain_the_plaintext() -> None:
    token = BOX_A.encrypt(STRIPE_KEY)
    assert STRIPE_KEY not in token
    assert "51HqzYbCdEfGhIjKlMnOpQrStUv" not in token
    assert token.isascii()


def test_the_same_plaintext_encrypts_to_different_tokens() -> None:
    assert BOX_A.encrypt(STRIPE_KEY) != BOX_A.encrypt(STRIPE_KEY)


def test_a_new_box_with_the_same_key_decrypts_earlier_tokens() -> None:
    token = BOX_A.encrypt(STRIPE_KEY)
    assert SecretBox([KEY_A]).decrypt(token) == STRIPE_KEY


def test_rotation_old_tokens_still_decrypt_with_the_old_key_listed_second() -> None:
    token = SecretBox([KEY_A]).encrypt(STRIPE_KEY)
    assert SecretBox([KEY_B, KEY_A]).decrypt(token) == STRIPE_KEY


def test_rotation_new_tokens_are_encrypted_with_the_first_key() -> None:
    token = SecretBox([KEY_B, KEY_A]).encrypt(STRIPE_KEY)
    assert SecretBox([KEY_B]).decrypt(token) == STRIPE_KEY
    with pytest.raises(SecretDecryptionError):
        SecretBox([KEY_A]).decrypt(token)


def test_a_wrong_key_fails_without_revealing_the_plaintext_or_keys() -> None:
    token = BOX_A.encrypt(STRIPE_KEY)
    with pytest.raises(SecretDecryptionError) as excinfo:
        SecretBox([KEY_B]).decrypt(token)
    for text in (str(excinfo.value), repr(excinfo.value)):
        assert STRIPE_KEY not in text
        assert KEY_A not in text
        assert KEY_B not in text
    assert "BILLING_SECRET_KEY" in str(excinfo.value)


def test_a_tampered_token_fails_to_decrypt() -> None:
    token = BOX_A.encrypt(STRIPE_KEY)
    middle = len(token) // 2
    tampered = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    with pytest.raises(SecretDecryptionError):
        BOX_A.decrypt(tampered)


@pytest.mark.parametrize("token", ["", "not-a-token", "gAAAAA"])
def test_garbage_fails_to_decrypt(token: str) -> None:
    with pytest.raises(SecretDecryptionError):
        BOX_A.decrypt(token)


def test_a_non_ascii_token_fails_to_decrypt_with_the_documented_error() -> None:
    with pytest.raises(SecretDecryptionError):
        BOX_A.decrypt("gAAAAAé")


def test_a_box_needs_at_least_one_key() -> None:
    with pytest.raises(ValueError, match="at least one"):
        SecretBox([])


def test_repr_hides_the_keys() -> None:
    box = SecretBox([KEY_B, KEY_A])
    for text in (repr(box), str(box)):
        assert KEY_A not in text
        assert KEY_B not in text
        assert "redacted" in text
