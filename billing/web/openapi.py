"""What the OpenAPI document says beyond what Litestar infers from the handlers' signatures.

Every operation documents the problem details it can answer (``application/problem+json``), and
handlers that read their JSON body themselves (usage events: a bad event is rejected on its own,
not the whole request) document that body with :func:`raw_json_body`, and handlers that answer
in several media types list them with :func:`alternative_contents`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import msgspec
from litestar import Litestar
from litestar.enums import ParamType
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
)
from litestar.openapi.spec.base import BaseSchemaObject
from litestar.routes import HTTPRoute

from billing.core.errors import PROBLEM_MEDIA_TYPE, Problem
from billing.web.idempotency import METHODS as IDEMPOTENT_METHODS

_BODY_METHODS = {"POST", "PUT", "PATCH"}
_DESCRIPTIONS = {
    400: "Malformed JSON or a malformed request (an invalid Idempotency-Key included)",
    401: "No API key, or an unknown or revoked one",
    403: "The API key's scope does not allow this",
    404: "No such object for this tenant",
    409: "Conflicts with the object's current state, or its Idempotency-Key is reused or in use",
    413: "The request body is over the size limit",
    422: "Well-formed but invalid",
    503: "A dependency (the database) is unavailable",
}


def problem(status: int) -> ResponseSpec:
    return ResponseSpec(
        data_container=Problem,
        media_type=PROBLEM_MEDIA_TYPE,
        description=_DESCRIPTIONS[status],
        generate_examples=False,
    )


def problem_statuses(path: str, methods: set[str]) -> set[int]:
    """The error statuses an operation may answer: every /v1 one authenticates, validates and
    looks objects up; writes may conflict and have a body that may be too large."""
    if not path.startswith("/v1/"):
        return set()
    statuses = {400, 401, 403, 404, 422}
    if methods - {"GET", "HEAD"}:
        statuses.add(409)
    if methods & _BODY_METHODS:
        statuses.add(413)
    return statuses


def document_problems(app: Litestar) -> None:
    """Add the problem responses to every handler, and the Idempotency-Key header to every /v1
    POST and PATCH, before the schema is first built."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            statuses = problem_statuses(route.path, set(handler.http_methods))
            declared = dict(handler.responses or {})
            handler.responses = {status: problem(status) for status in sorted(statuses)} | declared
            if route.path.startswith("/v1/") and set(handler.http_methods) & IDEMPOTENT_METHODS:
                handler.operation_class = with_idempotency_key(handler.operation_class)


IDEMPOTENCY_KEY = Parameter(
    name="Idempotency-Key",
    param_in=ParamType.HEADER,
    required=False,
    description="Makes a retry safe: the same request with the same key within 24 hours is "
    "answered as the first time (with `Idempotent-Replayed: true`), and runs once. Scoped to the "
    "tenant; a key used with another method, path or body answers 409 `idempotency_key_reused`, "
    "one whose first request still runs 409 `idempotency_key_in_use`.",
    schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=255, pattern="^[ -~]+$"),
)


def with_idempotency_key(operation: type[Operation]) -> type[Operation]:
    """``operation`` (Litestar's, or one of the classes below), documenting the Idempotency-Key
    header too."""
    inherited = getattr(operation, "__post_init__", None)

    def post_init(self: Operation) -> None:
        if inherited is not None:
            inherited(self)
        self.parameters = [*(self.parameters or []), IDEMPOTENCY_KEY]

    subclass = type(f"Idempotent{operation.__name__}", (operation,), {"__post_init__": post_init})
    return cast(type[Operation], dataclass(subclass))


@dataclass
class _Inline(BaseSchemaObject):
    """A JSON schema given as a plain dict."""

    schema: dict[str, Any]

    def to_schema(self) -> dict[str, Any]:
        return self.schema


def struct_schema(struct: type[msgspec.Struct], **overrides: dict[str, Any]) -> dict[str, Any]:
    """A flat Struct's JSON schema (no nested Structs), with some properties replaced."""
    schema: dict[str, Any] = msgspec.json.schema(struct)["$defs"][struct.__name__]
    return schema | {"properties": schema["properties"] | overrides}


def raw_json_body(schema: dict[str, Any], description: str) -> type[Operation]:
    """An operation class that documents a JSON body the handler decodes itself."""

    @dataclass
    class RawJsonBodyOperation(Operation):
        def __post_init__(self) -> None:
            media = OpenAPIMediaType(schema=_inline(schema))
            self.request_body = RequestBody(
                content={"application/json": media}, description=description, required=True
            )

    return RawJsonBodyOperation


def alternative_contents(status: int, contents: dict[str, dict[str, Any]]) -> type[Operation]:
    """An operation class whose ``status`` answer may also come in other media types."""

    @dataclass
    class AlternativeContentsOperation(Operation):
        def __post_init__(self) -> None:
            response = cast(OpenAPIResponse, (self.responses or {})[str(status)])
            response.content = (response.content or {}) | {
                media_type: OpenAPIMediaType(schema=_inline(schema))
                for media_type, schema in contents.items()
            }

    return AlternativeContentsOperation


def _inline(schema: dict[str, Any]) -> Schema:
    return cast(Schema, _Inline(schema))
