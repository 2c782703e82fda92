"""``/v1/events``: ingestion (single and batch) and reading an event back."""

from __future__ import annotations

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import FromPath

from billing.core.errors import FieldError, MalformedJson, ValidationFailed
from billing.metering import events, ingest
from billing.metering.coverage import CoverageSource
from billing.metering.ingest import MAX_BATCH, IngestResult
from billing.metering.schemas import EventOut
from billing.web.auth import INGEST, READ, scopes
from billing.web.dependencies import Caller, Ctx, Port
from billing.web.openapi import raw_json_body, struct_schema

# ``coverage``: which subscription covers an event, provided by the composition root (app.py).
Coverage = Port[CoverageSource]
# A full batch may carry 1000 events with 4 KiB of properties each.
BATCH_BODY_LIMIT = 6 * 1024 * 1024
_batch_decoder = msgspec.json.Decoder(ingest.BatchIn)
# Documented for clients; the handlers decode it themselves so that a bad event is rejected alone.
_VALUE = {"anyOf": [{"type": "string"}, {"type": "number"}], "description": 'A decimal, default "1"'}
EVENT_SCHEMA = struct_schema(ingest.EventIn, value=_VALUE)
BATCH_SCHEMA = {
    "type": "object",
    "properties": {"events": {"type": "array", "items": EVENT_SCHEMA, "minItems": 1, "maxItems": MAX_BATCH}},
    "required": ["events"],
    "additionalProperties": False,
}


def _batch_events(body: bytes) -> list[bytes]:
    try:
        batch = _batch_decoder.decode(body)
    except msgspec.ValidationError as exc:
        message = f"{exc}; a batch holds 1 to {MAX_BATCH} events"
        raise ValidationFailed(message, errors=[FieldError("events", message)]) from None
    except msgspec.DecodeError:
        raise MalformedJson("The request body is not valid JSON") from None
    return [bytes(raw) for raw in batch.events]


def _single_event(body: bytes) -> list[bytes]:
    try:
        msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise MalformedJson("The request body is not valid JSON") from None
    return [body]


class EventController(Controller):
    path = "/events"
    tags = ["Usage events"]

    @post(
        "/batch",
        opt=scopes(INGEST),
        status_code=200,
        request_max_body_size=BATCH_BODY_LIMIT,
        operation_class=raw_json_body(BATCH_SCHEMA, "1 to 1000 usage events"),
        summary="Post 1 to 1000 usage events; one result per event, in order",
    )
    async def post_batch(
        self, ctx: Ctx, principal: Caller, coverage: Coverage, request: Request
    ) -> IngestResult:
        raw_events = _batch_events(await request.body())
        return await ingest.ingest(
            ctx.database, principal.tenant_id, raw_events, now=ctx.clock.now(), coverage=coverage
        )

    @post(
        opt=scopes(INGEST),
        status_code=202,
        operation_class=raw_json_body(EVENT_SCHEMA, "One usage event"),
        summary="Post one usage event",
    )
    async def post_event(
        self, ctx: Ctx, principal: Caller, coverage: Coverage, request: Request
    ) -> IngestResult:
        raw_events = _single_event(await request.body())
        return await ingest.ingest(
            ctx.database, principal.tenant_id, raw_events, now=ctx.clock.now(), coverage=coverage
        )

    @get("/{event_id:str}", opt=scopes(READ), summary="An accepted event and its billing status")
    async def get_event(self, ctx: Ctx, principal: Caller, event_id: FromPath[str]) -> EventOut:
        async with ctx.database.read() as session:
            return await events.get_event(session, principal.tenant_id, event_id)
