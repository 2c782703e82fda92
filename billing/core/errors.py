"""The error tree and its mapping to RFC 9457 problem details.

Domain code raises :class:`ApiError` subclasses; the handlers here turn those, Litestar's own
HTTP exceptions and anything unexpected into ``application/problem+json`` with a stable ``code``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import (
    ClientException,
    HTTPException,
    InternalServerException,
    SerializationException,
    ValidationException,
)
from litestar.types import ExceptionHandlersMap
from prometheus_client import Counter
from sqlalchemy.exc import DBAPIError

from billing.core.db.engine import database_unavailable

PROBLEM_MEDIA_TYPE = "application/problem+json"
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")
# character_not_in_repertoire (a NUL in text), untranslatable_character (a \u0000 in jsonb)
_UNSTORABLE_TEXT = {"22021", "22P05"}
_CLIENT_DISCONNECTED = "client disconnected prematurely"  # what Litestar raises when the body is cut
# What Litestar says when a handler's body is missing: the KeyError of its ``data`` argument.
_MISSING_BODY = "'data'"
log = structlog.get_logger("billing.core.errors")
UNHANDLED_ERRORS = Counter("billing_unhandled_errors_total", "Requests that failed with an unexpected error")
DATABASE_UNAVAILABLE = Counter(
    "billing_database_unavailable_total", "Requests answered 503 because the database could not be reached"
)
RETRY_AFTER_SECONDS = 1


class FieldError(msgspec.Struct, frozen=True):
    field: str
    message: str


class Problem(msgspec.Struct, omit_defaults=True):
    """An RFC 9457 problem details body."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[FieldError] = msgspec.field(default_factory=list)
    request_id: str | None = None


class ApiError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.error_code = code or self.code
        self.errors = errors or []
        self.headers = headers or {}


class BadRequest(ApiError):
    status, code, title = 400, "bad_request", "Bad request"


class MalformedJson(BadRequest):
    code, title = "malformed_json", "Malformed JSON"


class Unauthorized(ApiError):
    status, code, title = 401, "unauthorized", "Unauthorized"

    def __init__(self, detail: str = "A valid API key is required: Authorization: Bearer <key>") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="billing"'})


class Forbidden(ApiError):
    status, code, title = 403, "forbidden", "Forbidden"


class NotFound(ApiError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(ApiError):
    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(ApiError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class ValidationFailed(ApiError):
    status, code, title = 422, "validation_error", "Validation failed"

    @classmethod
    def field(cls, field: str, message: str) -> ValidationFailed:
        return cls(f"{field}: {message}", errors=[FieldError(field, message)])


class ServiceUnavailable(ApiError):
    status, code, title = 503, "service_unavailable", "Service unavailable"


_CODES_BY_STATUS = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    422: ("validation_error", "Validation failed"),
    429: ("rate_limited", "Too many requests"),
    503: ("service_unavailable", "Service unavailable"),
}


def problem_response(
    request: Request[Any, Any, Any],
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    problem = Problem(
        type=f"urn:billing:problem:{code}",
        title=title,
        status=status,
        detail=detail,
        code=code,
        errors=errors or [],
        request_id=request.scope.get("state", {}).get("request_id"),
    )
    return Response(
        msgspec.json.encode(problem), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def handle_api_error(request: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
    return problem_response(
        request,
        status=exc.status,
        code=exc.error_code,
        title=exc.title,
        detail=exc.detail,
        errors=exc.errors,
        headers=exc.headers,
    )


def handle_validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    errors = (
        [_field_error(item) for item in exc.extra or [] if isinstance(item, dict)]
        if isinstance(exc.extra, list)
        else []
    )
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors) or str(exc.detail)
    return problem_response(
        request, status=422, code="validation_error", title="Validation failed", detail=detail, errors=errors
    )


def _field_error(item: dict[str, Any]) -> FieldError:
    message = str(item.get("message", "invalid value"))
    key = str(item.get("key") or "")
    if key in ("", "data"):  # the body as a whole: name the offending field when msgspec does
        unknown = _UNKNOWN_FIELD.search(message)
        key = unknown.group(1) if unknown else "body"
        if message == _MISSING_BODY:
            message = "a JSON body is required"
    return FieldError(field=key.removeprefix("$."), message=message)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    if type(exc) is ClientException and isinstance(exc.__cause__, SerializationException):
        return problem_response(
            request,
            status=400,
            code=MalformedJson.code,
            title=MalformedJson.title,
            detail="The request body is not valid JSON",
        )
    if type(exc) is InternalServerException and exc.detail == _CLIENT_DISCONNECTED:
        # The client hung up (or was cut off as too slow) before sending its whole body: no one
        # reads this answer, and it is not our error.
        log.info("client_disconnected", path=request.url.path)
        return problem_response(
            request,
            status=400,
            code="client_disconnected",
            title="Client disconnected",
            detail=_CLIENT_DISCONNECTED,
        )
    status = exc.status_code
    code, title = _CODES_BY_STATUS.get(status, ("http_error", "HTTP error"))
    if status >= 500:
        return handle_unexpected(request, exc)
    return problem_response(
        request, status=status, code=code, title=title, detail=str(exc.detail or title), headers=exc.headers
    )


def handle_database_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """The database is away (restarting, failing over, unreachable): a 503 that says to retry,
    not a 500, since the request may well succeed a moment later."""
    DATABASE_UNAVAILABLE.inc()
    log.warning("database_unavailable", path=request.url.path, error_type=type(exc).__name__)
    return problem_response(
        request,
        status=503,
        code="database_unavailable",
        title="Service unavailable",
        detail="The database is unavailable; retry shortly",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if database_unavailable(exc):
        return handle_database_unavailable(request, exc)
    UNHANDLED_ERRORS.inc()
    log.error("unhandled_error", path=request.url.path, error_type=type(exc).__name__, exc_info=exc)
    return problem_response(
        request,
        status=500,
        code="internal_error",
        title="Internal server error",
        detail="An unexpected error occurred; it has been logged with this request's id",
    )


def handle_database_error(request: Request[Any, Any, Any], exc: DBAPIError) -> Response[bytes]:
    """Text PostgreSQL cannot store (NUL, U+0000) is the request's fault; anything else is ours."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    if sqlstate not in _UNSTORABLE_TEXT:
        return handle_unexpected(request, exc)
    message = "text may not contain the NUL character (U+0000)"
    return problem_response(
        request,
        status=422,
        code="validation_error",
        title="Validation failed",
        detail=message,
        errors=[FieldError("body", message)],
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ApiError: handle_api_error,
    ValidationException: handle_validation,
    HTTPException: handle_http_exception,
    DBAPIError: handle_database_error,
    Exception: handle_unexpected,
}
