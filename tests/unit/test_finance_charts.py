"""The SVG chart builders: well-formed, accessible SVG whose bars and points are where the values
say, with round axis ticks, and every piece of text escaped."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.core import money
from billing.finance.charts import Chart, Series, bar_chart, line_chart, nice_ticks

NS = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{NS}svg"
    return root


def shapes(root: ET.Element, tag: str, kind: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{NS}{tag}") if e.get("class", "").split()[0] == kind]


def usd_chart(*series: Series, labels: list[str] | None = None) -> Chart:
    return Chart(
        id="revenue",
        title="Revenue",
        description="Invoiced and collected per month",
        labels=labels or ["2026-09", "2026-10", "2026-11"],
        series=list(series),
        text=lambda value: money.format_money(int(value), "USD"),
        integer=True,
    )


def test_a_chart_is_an_image_named_by_its_own_title_and_description() -> None:
    root = parse(bar_chart(usd_chart(Series("Invoiced", [100, 200, 300]))))
    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == "revenue-title" and root.get("aria-describedby") == "revenue-desc"
    title, desc = root.find(f"{NS}title"), root.find(f"{NS}desc")
    assert (title.get("id"), title.text) == ("revenue-title", "Revenue")
    assert (desc.get("id"), desc.text) == ("revenue-desc", "Invoiced and collected per month")


def test_bar_heights_are_proportional_to_the_values_and_each_bar_says_its_value() -> None:
    root = parse(
        bar_chart(usd_chart(Series("Invoiced", [1250, 5000, 0]), Series("Collected", [2500, None, 750])))
    )
    bars = {bar.find(f"{NS}title").text: float(bar.get("height")) for bar in shapes(root, "rect", "bar")}
    assert set(bars) == {
        "2026-09 · Invoiced: $12.50",
        "2026-10 · Invoiced: $50.00",
        "2026-11 · Invoiced: $0.00",
        "2026-09 · Collected: $25.00",
        "2026-11 · Collected: $7.50",
    }
    unit = bars["2026-10 · Invoiced: $50.00"] / 5000
    for text, height in bars.items():
        cents = int(Decimal(text.split("$")[1]) * 100)
        assert height == pytest.approx(cents * unit, abs=0.011)
    # the two series sit side by side within each month, in order
    x = {bar.find(f"{NS}title").text: float(bar.get("x")) for bar in shapes(root, "rect", "bar")}
    assert (
        x["2026-09 · Invoiced: $12.50"] < x["2026-09 · Collected: $25.00"] < x["2026-10 · Invoiced: $50.00"]
    )


def test_negative_values_hang_below_the_zero_line() -> None:
    root = parse(bar_chart(usd_chart(Series("Collected", [1000, -500]), labels=["a", "b"])))
    up, down = shapes(root, "rect", "bar")
    zero = [line for line in shapes(root, "line", "grid") if line.get("stroke") == "#5b6574"]
    (baseline,) = [float(line.get("y1")) for line in zero]
    assert float(up.get("y")) + float(up.get("height")) == pytest.approx(baseline)
    assert float(down.get("y")) == pytest.approx(baseline)
    assert float(up.get("height")) == pytest.approx(2 * float(down.get("height")), abs=0.02)


def test_axis_ticks_are_round_values_formatted_as_money() -> None:
    root = parse(bar_chart(usd_chart(Series("Invoiced", [1250, 4200, 0]))))
    ticks = [text.text for text in shapes(root, "text", "tick")]
    assert ticks == ["$0.00", "$10.00", "$20.00", "$30.00", "$40.00", "$50.00"]
    labels = [text.text for text in shapes(root, "text", "label")]
    assert labels == ["2026-09", "2026-10", "2026-11"]


@pytest.mark.parametrize("values", [[0, 0, 0], [None, None, None]])
def test_a_chart_without_data_says_so(values: list[int | None]) -> None:
    root = parse(bar_chart(usd_chart(Series("Invoiced", values))))
    assert [t.text for t in shapes(root, "text", "empty")] == ["No data"]
    assert all(float(bar.get("height")) == 0 for bar in shapes(root, "rect", "bar"))


def test_a_chart_without_any_label_is_still_valid_and_says_so() -> None:
    chart = Chart("empty", "Nothing yet", "No months", [], [Series("Rate", [])])
    for svg in (bar_chart(chart), line_chart(chart)):
        assert [t.text for t in shapes(parse(svg), "text", "empty")] == ["No data"]


def test_a_line_with_one_point_draws_the_point_and_no_line() -> None:
    chart = Chart(
        "rate",
        "Recovery",
        "d",
        ["2026-11"],
        [Series("Recovered", [Decimal("50.0")])],
        text=lambda value: f"{value} %",
    )
    root = parse(line_chart(chart, maximum=Decimal(100)))
    assert shapes(root, "polyline", "line") == []
    (point,) = shapes(root, "circle", "point")
    assert point.find(f"{NS}title").text == "2026-11 · Recovered: 50.0 %"
    ticks = {t.text: float(t.get("y")) for t in shapes(root, "text", "tick")}
    assert list(ticks) == ["0 %", "20 %", "40 %", "60 %", "80 %", "100 %"]
    assert float(point.get("cy")) == pytest.approx((ticks["0 %"] + ticks["100 %"]) / 2)


def test_a_missing_value_breaks_the_line() -> None:
    chart = Chart(
        "rate",
        "Recovery",
        "d",
        list("abcde"),
        [Series("Recovered", [Decimal(10), Decimal(20), None, Decimal(40), Decimal(50)])],
    )
    root = parse(line_chart(chart))
    lines = shapes(root, "polyline", "line")
    assert [len(line.get("points").split()) for line in lines] == [2, 2]
    assert len(shapes(root, "circle", "point")) == 4


def test_every_text_is_escaped() -> None:
    evil = 'a <b> & "c"'
    chart = Chart(
        id="usage-0",
        title=f"Meter {evil}",
        description=f"Described {evil}",
        labels=[f"day {evil}"],
        series=[Series(f"series {evil}", [Decimal(3)]), Series(f"other {evil}", [Decimal(1)])],
        text=lambda value: f"{value} {evil}",
    )
    for svg in (bar_chart(chart), line_chart(chart)):
        assert "<b>" not in svg
        root = parse(svg)
        assert root.find(f"{NS}title").text == f"Meter {evil}"
        assert root.find(f"{NS}desc").text == f"Described {evil}"
        texts = [t.text for t in root.iter(f"{NS}text")]
        assert f"day {evil}" in texts and f"series {evil}" in texts and f"3 {evil}" in texts
        values = [t.text for t in root.iter(f"{NS}title")][1:]
        assert f"day {evil} · series {evil}: 3 {evil}" in values


def test_many_labels_are_thinned_so_that_they_do_not_overlap() -> None:
    labels = [f"Nov {day}" for day in range(1, 31)]
    chart = Chart("u", "Usage", "d", labels, [Series("calls", [Decimal(day) for day in range(30)])])
    root = parse(bar_chart(chart, width=360, height=200))
    shown = shapes(root, "text", "label")
    assert 2 <= len(shown) < 30 and shown[0].text == "Nov 1"
    xs = [float(label.get("x")) for label in shown]
    assert min(b - a for a, b in itertools.pairwise(xs)) >= len("Nov 30") * 7


@given(st.lists(st.integers(min_value=-(10**12), max_value=10**12) | st.none(), max_size=12), st.booleans())
def test_ticks_are_evenly_spaced_and_cover_zero_and_every_value(
    values: list[int | None], integer: bool
) -> None:
    ticks = nice_ticks(values, integer=integer)
    known = [v for v in values if v is not None]
    assert ticks[0] <= min([0, *known]) and ticks[-1] >= max([0, *known])
    steps = {b - a for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1 and steps.pop() > 0
    assert len(ticks) <= 12
