"""``validate_metadata``: Stripe's limits on every ``metadata`` object."""

from __future__ import annotations

from typing import Any

import pytest

from billing.core.errors import ValidationFailed
from billing.core.validation import validate_metadata


def test_the_limits_themselves_are_accepted_and_returned_as_a_new_dict() -> None:
    value = {f"{i:02d}".ljust(40, "k"): "v" * 500 for i in range(50)}

    checked = validate_metadata("metadata", value)

    assert checked == value and checked is not value
    assert validate_metadata("metadata", {}) == {}
    assert validate_metadata("metadata", {"k": ""}) == {"k": ""}


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({f"k{i}": "v" for i in range(51)}, "metadata"),
        ({"k" * 41: "v"}, "metadata"),
        ({"": "v"}, "metadata"),
        ({"k": "v" * 501}, "metadata.k"),
        ({"k": 1}, "metadata.k"),
        ({"k": None}, "metadata.k"),
        ({1: "v"}, "metadata"),
    ],
)
def test_anything_beyond_them_names_the_field(value: dict[Any, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        validate_metadata("metadata", value)

    assert [error.field for error in raised.value.errors] == [field]
