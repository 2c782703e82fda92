"""Which price an event group gets: exactly one winner whenever the plan's prices validate, the
ambiguity check is exact, and the checks of filters and group_by against a meter's group_by.

Meters in this branch have no ``group_by`` column yet, so the checks that need one are tested
here on the validators, with a stand-in meter; the API tests cover the rest."""

from __future__ import annotations

from itertools import product
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.core.errors import ValidationFailed
from billing.invoicing.price_checks import check_unambiguous, dimension_problems, group_by_of
from billing.invoicing.price_match import Terms, ambiguous_pairs, project, winner
from billing.invoicing.schemas import PriceIn

KEYS = ("region", "model", "tier")
VALUES = ("a", "b", "c")


@st.composite
def price_terms(draw: st.DrawFn) -> Terms:
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=3))
    filters = {k: frozenset(draw(st.lists(st.sampled_from(VALUES), min_size=1, unique=True))) for k in keys}
    return Terms(filters, tuple(draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=2))))


def every_group() -> list[dict[str, str | None]]:
    return [dict(zip(KEYS, combo, strict=True)) for combo in product((*VALUES, None), repeat=len(KEYS))]


def valid(prices: list[Terms]) -> bool:
    """What plan validation asks: one unfiltered price at most, no ambiguous pair."""
    return sum(1 for p in prices if not p.filters) <= 1 and not ambiguous_pairs(prices)


def matching(terms: Terms, group: dict[str, str | None]) -> bool:
    return all(group[k] is not None and group[k] in values for k, values in terms.filters.items())


@given(st.lists(price_terms(), max_size=6))
def test_a_valid_set_of_prices_has_exactly_one_winner_for_every_group(prices: list[Terms]) -> None:
    unfiltered = any(not p.filters for p in prices)
    for group in every_group():
        candidates = [i for i, p in enumerate(prices) if matching(p, group)]
        most = max((len(prices[i].filters) for i in candidates), default=-1)
        best = [i for i in candidates if len(prices[i].filters) == most]
        if not valid(prices):
            continue
        assert len(best) <= 1, (prices, group)
        assert winner(prices, group) == (best[0] if best else None)
        if unfiltered:
            assert winner(prices, group) is not None


@given(price_terms(), price_terms())
def test_ambiguity_is_exactly_a_group_that_matches_both_with_as_many_keys(a: Terms, b: Terms) -> None:
    both = any(matching(a, g) and matching(b, g) for g in every_group())
    assert bool(ambiguous_pairs([a, b])) == (len(a.filters) == len(b.filters) and both)


def test_the_most_filter_keys_win_and_the_unfiltered_price_takes_the_rest() -> None:
    prices = [
        Terms({}),
        Terms({"region": frozenset({"eu"})}),
        Terms({"region": frozenset({"eu", "us"}), "model": frozenset({"x"})}),
        Terms({"region": frozenset({"us"})}),
    ]
    assert not ambiguous_pairs(prices)
    assert winner(prices, {"region": "eu", "model": "x"}) == 2
    assert winner(prices, {"region": "eu", "model": "y"}) == 1
    assert winner(prices, {"region": "us", "model": None}) == 3
    assert winner(prices, {"region": None, "model": "x"}) == 0
    assert winner(prices[1:], {"region": "uk", "model": "x"}) is None


def test_a_group_is_projected_on_the_price_group_by_in_its_order() -> None:
    group = {"region": "eu", "model": None, "tier": "1"}
    assert project(group, ("tier", "model")) == ("1", None)
    assert project(group, ()) == ()


def price(**fields: object) -> PriceIn:
    return PriceIn(meter="m", model="per_unit", unit_amount="1", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "problems"),
    [
        ({"filters": {"region": ["eu"]}, "group_by": ["model"]}, []),
        ({"filters": {"color": ["red"]}}, ["filters.color"]),
        ({"filters": {"region": []}}, ["filters.region"]),
        ({"filters": {"region": [str(i) for i in range(101)]}}, ["filters.region"]),
        ({"filters": {"region": ["x" * 129]}}, ["filters.region[0]"]),
        ({"group_by": ["region", "color"]}, ["group_by[1]"]),
        ({"group_by": ["region", "region"]}, ["group_by[1]"]),
    ],
)
def test_filters_and_group_by_must_name_the_meter_keys(fields: dict, problems: list[str]) -> None:
    meter = SimpleNamespace(group_by=["region", "model"])
    found = dimension_problems(price(**fields), group_by_of(meter))
    assert [field for field, _ in found] == problems


def test_a_meter_without_group_by_takes_no_dimension() -> None:
    assert group_by_of(SimpleNamespace()) == [] and group_by_of(SimpleNamespace(group_by=None)) == []
    found = dimension_problems(price(filters={"region": ["eu"]}, group_by=["region"]), [])
    assert [field for field, _ in found] == ["filters.region", "group_by[0]"]


def stored(meter_id: str, **filters: list[str]) -> dict:
    return {"meter_id": meter_id, "filters": filters} if filters else {"meter_id": meter_id}


def test_overlapping_prices_of_one_meter_are_ambiguous_naming_the_later_one() -> None:
    check_unambiguous(
        [stored("m", region=["eu"]), stored("m", region=["us"]), stored("n", region=["eu"]), stored("m")]
    )
    with pytest.raises(ValidationFailed) as raised:
        check_unambiguous([stored("m", region=["eu", "uk"]), stored("m"), stored("m", model=["x"])])
    assert raised.value.error_code == "ambiguous_prices"
    assert [e.field for e in raised.value.errors] == ["prices[2].filters"]
    with pytest.raises(ValidationFailed):
        check_unambiguous([stored("m", region=["eu"], model=["x"]), stored("m", region=["eu"], tier=["1"])])
