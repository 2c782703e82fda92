"""Which of a meter's prices an event group gets, and the line it falls on (pure).

A group is the event's values of the meter's ``group_by`` keys (``None``: missing or null). A
price matches a group when each of its filter keys has the group's value listed (``None`` never
is). The matching price with the most filter keys wins; an unfiltered price matches every
group, so it takes what no filtered price does; no match: the group is unpriced.

Validation (``ambiguous_pairs``) guarantees one winner: at most one unfiltered price per meter,
and two prices with as many filter keys share a key whose value lists are disjoint, so no group
can match both. Two such prices without one are ambiguous exactly: a group taking a common
value for each shared key and any listed value for the others matches both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

Group = Mapping[str, str | None]
GroupValues = tuple[str | None, ...]


@dataclass(frozen=True)
class Terms:
    """What matching reads of one price: its filters and its own group_by."""

    filters: Mapping[str, frozenset[str]]
    group_by: tuple[str, ...] = ()

    @classmethod
    def of(cls, stored: Mapping[str, Any]) -> Terms:
        filters = stored.get("filters") or {}
        return cls(
            {key: frozenset(values) for key, values in filters.items()}, tuple(stored.get("group_by") or ())
        )


def matches(terms: Terms, group: Group) -> bool:
    return all(group.get(key) in values for key, values in terms.filters.items())


def winner(prices: Sequence[Terms], group: Group) -> int | None:
    """The index of the winning price in ``prices``, None when none matches."""
    best: int | None = None
    for index, terms in enumerate(prices):
        if matches(terms, group) and (best is None or len(terms.filters) > len(prices[best].filters)):
            best = index
    return best


def project(group: Group, group_by: Sequence[str]) -> GroupValues:
    """The group's values of a price's ``group_by``: the line it falls on."""
    return tuple(group.get(key) for key in group_by)


def ambiguous_pairs(prices: Sequence[Terms]) -> list[tuple[int, int]]:
    """Pairs of prices (of one meter) some group would match both of with as many keys."""
    return [
        (a, b)
        for (a, first), (b, second) in combinations(enumerate(prices), 2)
        if len(first.filters) == len(second.filters) and not _exclusive(first, second)
    ]


def _exclusive(first: Terms, second: Terms) -> bool:
    shared = first.filters.keys() & second.filters.keys()
    return any(first.filters[key].isdisjoint(second.filters[key]) for key in shared)


def sort_key(values: GroupValues) -> tuple[tuple[bool, str], ...]:
    """Lines of a grouped price in order of their values, a null after every value."""
    return tuple((value is None, value or "") for value in values)


def describe(group: Iterable[tuple[str, str | None]]) -> str:
    return ", ".join(f"{key}={'null' if value is None else value}" for key, value in group)
