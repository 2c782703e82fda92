"""The overview page's charts, built from the figures of :mod:`billing.finance.overview`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from markupsafe import Markup

from billing.core import money
from billing.finance import charts
from billing.finance.overview import DailyUsage, Month, Overview, Revenue


@dataclass(frozen=True)
class Charts:
    revenue: dict[str, Markup]
    recovery: Markup
    usage: dict[str, Markup]


def charts_of(page: Overview) -> Charts:
    return Charts(
        revenue={rev.currency: _revenue_chart(page, rev) for rev in page.revenue},
        recovery=_recovery_chart(page),
        usage={daily.meter.id: _usage_chart(page, i, daily) for i, daily in enumerate(page.usage)},
    )


def _span(labels: Sequence[str]) -> str:
    return f"{labels[0]} to {labels[-1]}" if labels else ""


def _month_axis(months: Sequence[Month]) -> list[str]:
    return [
        f"{m.local:%b %Y}" if i == 0 or m.local.month == 1 else f"{m.local:%b}" for i, m in enumerate(months)
    ]


def _revenue_chart(page: Overview, rev: Revenue) -> Markup:
    labels = [month.label for month in page.months]
    chart = charts.Chart(
        id=f"revenue-{rev.currency}",
        title=f"Revenue per month in {rev.currency}",
        description=(
            f"Invoiced (finalized invoice totals) and collected (payments less refunds) per month, "
            f"{_span(labels)}. The table below lists the amounts."
        ),
        labels=labels,
        series=[charts.Series("Invoiced", rev.invoiced), charts.Series("Collected", rev.collected)],
        text=lambda value: money.format_money(int(value), rev.currency),
        integer=True,
        axis_labels=_month_axis(page.months),
    )
    return charts.bar_chart(chart)


def _recovery_chart(page: Overview) -> Markup:
    labels = [month.label for month in page.months]
    chart = charts.Chart(
        id="recovery",
        title="Failed-payment recovery rate per month",
        description=(
            "Share of the dunning cases opened each month that were recovered, in percent, "
            f"{_span(labels)}. Months without cases have no point. The table below lists the counts."
        ),
        labels=labels,
        series=[charts.Series("Recovered", [row.rate for row in page.recovery])],
        text=lambda value: f"{value} %",
        axis_labels=_month_axis(page.months),
    )
    return charts.line_chart(chart, maximum=Decimal(100))


AGGREGATION_TEXT = {
    "sum": "sum of the values per day",
    "count": "events per day",
    "max": "highest value per day",
    "unique_count": "distinct values per day, added up over customers",
    "latest": "last value of the day, added up over customers",
}


def _usage_chart(page: Overview, index: int, daily: DailyUsage) -> Markup:
    labels = [f"{day:%Y-%m-%d}" for day in page.days]
    meter = daily.meter
    unit = f" ({meter.unit})" if meter.unit else ""
    chart = charts.Chart(
        id=f"usage-{index}",
        title=f"{meter.name or meter.key}{unit}: usage per day",
        description=f"Meter {meter.key}, {AGGREGATION_TEXT[meter.aggregation]}, {_span(labels)}.",
        labels=labels,
        series=[charts.Series(meter.key, daily.values)],
        text=lambda value: f"{value:,}",
        axis_labels=[f"{day:%b} {day.day}" for day in page.days],
    )
    return charts.bar_chart(chart, width=360, height=200)
