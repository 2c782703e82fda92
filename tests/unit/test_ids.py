from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

import billing.core.ids
from billing.core.ids import PREFIXES, has_prefix, new_id

CROCKFORD_LOWER = "0123456789abcdefghjkmnpqrstvwxyz"
# 2026-11-21T12:00:00Z in milliseconds since the epoch.
BASE_MS = 1_795_262_400_000
MAX_MS = 2**48 - 1


def id_shape(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"{prefix}_[{CROCKFORD_LOWER}]{{26}}")


def at_ms(monkeypatch: pytest.MonkeyPatch, *milliseconds: int) -> None:
    """Make ``new_id`` read the given wall times, one per call."""
    times: Iterator[int] = iter(ms * 1_000_000 for ms in milliseconds)
    monkeypatch.setattr(billing.core.ids, "wall_time_ns", lambda: next(times))


def test_tenant_ids_are_ten_and_26_lowercase_crockford_characters() -> None:
    for _ in range(200):
        assert id_shape("ten").fullmatch(new_id("ten"))


@pytest.mark.parametrize("prefix", sorted(PREFIXES))
def test_every_known_prefix_makes_well_formed_ids(prefix: str) -> None:
    value = new_id(prefix)
    assert id_shape(prefix).fullmatch(value)
    assert has_prefix(value, prefix)


def test_the_alphabet_leaves_out_ambiguous_letters() -> None:
    letters = {ch for _ in range(500) for ch in new_id("cus")[4:]}
    assert letters.isdisjoint(set("ilou") | set("ILOU"))


@pytest.mark.parametrize("prefix", ["usr", "", "TEN", "ten_", "customer"])
def test_unknown_prefix_raises(prefix: str) -> None:
    with pytest.raises(ValueError, match="unknown id prefix"):
        new_id(prefix)


def test_has_prefix_needs_the_underscore() -> None:
    value = new_id("plan")
    assert has_prefix(value, "plan")
    assert not has_prefix(value, "pla")
    assert not has_prefix(value, "cus")


def test_ten_thousand_ids_are_unique() -> None:
    ids = [new_id("evt") for _ in range(10_000)]
    assert len(set(ids)) == len(ids)


def test_ids_made_in_the_same_millisecond_are_still_unique(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(billing.core.ids, "wall_time_ns", lambda: BASE_MS * 1_000_000)
    ids = [new_id("evt") for _ in range(10_000)]
    assert len(set(ids)) == len(ids)


def test_ids_sort_in_creation_order_across_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    times = [BASE_MS + step for step in range(500)] + [BASE_MS + 10**6, BASE_MS + 10**9, BASE_MS + 10**11]
    at_ms(monkeypatch, *times)
    ids = [new_id("inv") for _ in times]
    assert sorted(ids) == ids


def test_a_later_millisecond_sorts_after_any_random_part(monkeypatch: pytest.MonkeyPatch) -> None:
    # Many ids in one millisecond, then one in the next: it sorts after all of them.
    at_ms(monkeypatch, *([BASE_MS] * 1000), BASE_MS + 1)
    earlier = [new_id("sub") for _ in range(1000)]
    later = new_id("sub")
    assert later > max(earlier)


@given(st.integers(0, MAX_MS - 1), st.integers(1, MAX_MS))
def test_any_earlier_millisecond_sorts_first(first: int, gap: int) -> None:
    second = min(first + gap, MAX_MS)
    times = iter((first * 1_000_000, second * 1_000_000))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(billing.core.ids, "wall_time_ns", lambda: next(times))
        a, b = new_id("cus"), new_id("cus")
    assert a < b


@given(st.integers(0, MAX_MS), st.integers(0, 2**80 - 1))
def test_the_26_characters_are_the_base32_digits_of_time_then_randomness(ms: int, random: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(billing.core.ids, "wall_time_ns", lambda: ms * 1_000_000)
        patch.setattr(billing.core.ids, "_random_bytes", lambda count: random.to_bytes(count, "big"))
        digits = new_id("inv")[4:]
    assert sum(CROCKFORD_LOWER.index(ch) * 32**place for place, ch in enumerate(reversed(digits))) == (
        ms << 80 | random
    )


def test_ids_made_in_one_millisecond_differ_in_their_random_digits() -> None:
    at = BASE_MS * 1_000_000
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(billing.core.ids, "wall_time_ns", lambda: at)
        made = [new_id("evt") for _ in range(5000)]  # more than one read of the randomness pool
    assert len(set(made)) == len(made)
    assert len({value[4:14] for value in made}) == 1  # the time digits
