"""Query and path parameters read at the HTTP edge, shared by the domains' routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar.params import QueryParameter

from billing.core.clock import InvalidTimestamp, parse_timestamp
from billing.core.errors import ValidationFailed

# A list filter naming a customer by its id or its external_id.
CustomerFilter = Annotated[
    str | None, QueryParameter(max_length=128, description="Customer id or external_id")
]


def timestamp_param(field: str, value: str) -> datetime:
    """A query parameter read as an RFC 3339 timestamp; a 422 naming the field otherwise."""
    try:
        return parse_timestamp(value)
    except InvalidTimestamp as exc:
        raise ValidationFailed.field(field, str(exc)) from None
