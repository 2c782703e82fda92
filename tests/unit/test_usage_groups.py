"""Group values and group keys: the stored contract that rollups and prices share."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.metering import groups


def test_a_group_key_is_the_compact_json_array_of_the_values_in_group_by_order() -> None:
    properties = {"direction": "input", "model": "gpt-4o", "other": "x"}
    assert groups.group_key(properties, ["model", "direction"]) == '["gpt-4o","input"]'
    assert groups.group_key(properties, ["direction", "model"]) == '["input","gpt-4o"]'


def test_numbers_and_booleans_keep_their_json_text_and_missing_or_null_is_null() -> None:
    properties = {"n": 42, "f": 1.5, "t": True, "no": False, "null": None}
    assert groups.group_values(properties, ["n", "f", "t", "no", "null", "absent"]) == (
        "42",
        "1.5",
        "true",
        "false",
        None,
        None,
    )
    assert groups.group_key(properties, ["null", "n"]) == '[null,"42"]'
    assert groups.group_key(None, ["a"]) == "[null]"


def test_a_meter_without_group_by_has_the_empty_key() -> None:
    assert groups.group_key({"model": "x"}, []) == ""
    assert groups.decode("") == ()


def test_values_over_128_characters_objects_and_arrays_are_refused() -> None:
    assert groups.group_values({"k": "é" * 128}, ["k"]) == ("é" * 128,)
    for bad in ("x" * 129, {"a": 1}, [1], 10**200):
        with pytest.raises(groups.InvalidGroupValue):
            groups.group_values({"k": bad}, ["k"])


def test_text_is_kept_exactly_escaped_as_json() -> None:
    values = ('quote " backslash \\ tab \t', "日本", None)
    key = groups.encode(values)
    assert key == '["quote \\" backslash \\\\ tab \\t","日本",null]'
    assert groups.decode(key) == values


@given(st.lists(st.one_of(st.none(), st.text(max_size=128)), min_size=1, max_size=3))
def test_decode_inverts_encode(values: list[str | None]) -> None:
    assert groups.decode(groups.encode(tuple(values))) == tuple(values)


def test_equal_values_of_other_types_keep_their_own_keys_when_repeated() -> None:
    keys = [groups.group_key({"k": value}, ["k"]) for value in ("1", 1, True, 1.0, "1", 1, True, 1.0)]
    assert keys == ['["1"]', '["1"]', '["true"]', '["1.0"]'] * 2


def test_a_refused_value_stays_refused_when_repeated() -> None:
    for bad in ("x" * 129, {"a": 1}, [1]):
        for _ in range(2):
            with pytest.raises(groups.InvalidGroupValue):
                groups.group_key({"k": bad, "j": "ok"}, ["j", "k"])


@given(
    st.dictionaries(
        st.sampled_from(["a", "b", "c"]),
        st.one_of(st.none(), st.text(max_size=128), st.integers(-5, 5), st.booleans(), st.floats(-2, 2)),
    ),
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True),
)
def test_a_group_key_is_the_encoding_of_the_group_values_every_time(
    properties: dict[str, object], group_by: list[str]
) -> None:
    expected = groups.encode(groups.group_values(properties, group_by))
    assert groups.group_key(properties, group_by) == expected
    assert groups.group_key(dict(properties), group_by) == expected
