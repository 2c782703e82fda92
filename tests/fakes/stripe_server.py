"""A Stripe-compatible HTTP server for tests: the real ``stripe`` SDK talks to it unmodified.

It speaks Stripe's wire format (form-encoded bodies with bracket keys, JSON answers, Stripe's
error bodies and headers) for the few endpoints the service uses: PaymentIntents (create with
``confirm``/``off_session``, retrieve, search), refunds, customers and charges (retrieve).

Outcomes follow Stripe's test payment methods (``pm_card_visa``, ``pm_card_chargeDeclined``...).

Idempotency follows Stripe's documentation: the first answer for an ``Idempotency-Key`` is saved
once the endpoint began executing (2xx, 402 card errors, and a 500 injected *after* execution)
and replayed with ``Idempotent-Replayed: true``; validation errors (400) are not saved; the same
key with other parameters or on another endpoint is an ``idempotency_error``. Keys are scoped per
API key and forgotten after 24 hours of the fake's clock.

Faults (``fail``, ``rate_limit``, ``hang``, ``drop``) apply to the next N requests matching an
optional method and path, including requests that would be replays:

- ``when="before"``: before the idempotency layer and the endpoint. An error is not saved (a retry
  with the same key executes); a hang then continues normally (or drops, ``then="drop"``).
- ``when="during"`` (hang only): the key is held in progress while hanging, as Stripe does while an
  endpoint executes; a concurrent request with the same key gets 409 ``idempotency_key_in_use``.
- ``when="after"``: after execution. An error replaces the saved answer for the key (Stripe saves
  a 500 once execution started) and carries ``Stripe-Should-Retry: false``; a hang delays the
  real answer, which is already saved; a drop closes the socket after the charge was made.

Each account is an API key (or what ``api_keys`` maps it to): objects, searches and idempotency
keys of one account are invisible to another. Unknown customers are accepted unless
``strict_customers=True``. Payment methods come back as sent (Stripe would clone ``pm_card_*``).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import random
import re
import socket
import string
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import pytest

from billing.core.clock import Clock, FrozenClock, SystemClock

API_VERSION = "2026-10-28.endive"
IDEMPOTENCY_TTL = timedelta(hours=24)
DEFAULT_KEY_PATTERN = re.compile(r"(sk|rk)_test_[0-9A-Za-z]{16,247}")
_DOCS = "https://stripe.com/docs/error-codes/"
_ALNUM = string.ascii_letters + string.digits

Json = dict[str, Any]
When = Literal["before", "during", "after"]


# --- Stripe's test payment methods ---------------------------------------------------------------


@dataclass(frozen=True)
class TestCard:
    """What confirming a PaymentIntent with a test payment method does."""

    __test__ = False  # not a pytest test class

    brand: str
    last4: str
    funding: str = "credit"
    code: str | None = None
    decline_code: str | None = None
    message: str = ""
    param: str | None = None
    needs_authentication: bool = False


_DECLINED = "Your card was declined."
TEST_CARDS: dict[str, TestCard] = {
    "pm_card_visa": TestCard("visa", "4242"),
    "pm_card_visa_debit": TestCard("visa", "5556", "debit"),
    "pm_card_mastercard": TestCard("mastercard", "4444"),
    "pm_card_amex": TestCard("amex", "8431"),
    "pm_card_chargeDeclined": TestCard("visa", "0002", code="card_declined", decline_code="generic_decline"),
    "pm_card_chargeDeclinedInsufficientFunds": TestCard(
        "visa", "9995", code="card_declined", decline_code="insufficient_funds"
    ),
    "pm_card_chargeDeclinedLostCard": TestCard(
        "visa", "9987", code="card_declined", decline_code="lost_card"
    ),
    "pm_card_chargeDeclinedStolenCard": TestCard(
        "visa", "9979", code="card_declined", decline_code="stolen_card"
    ),
    "pm_card_chargeDeclinedFraudulent": TestCard(
        "visa", "0019", code="card_declined", decline_code="fraudulent"
    ),
    "pm_card_chargeDeclinedExpiredCard": TestCard(
        "visa", "0069", code="expired_card", decline_code="expired_card", param="exp_month"
    ),
    "pm_card_chargeDeclinedIncorrectCvc": TestCard(
        "visa", "0127", code="incorrect_cvc", decline_code="incorrect_cvc", param="cvc"
    ),
    "pm_card_chargeDeclinedProcessingError": TestCard(
        "visa", "0119", code="processing_error", decline_code="processing_error"
    ),
    "pm_card_authenticationRequired": TestCard(
        "visa",
        "3184",
        code="authentication_required",
        decline_code="authentication_required",
        needs_authentication=True,
    ),
}
_MESSAGES = {
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
    "processing_error": "An error occurred while processing your card. Try again in a little bit.",
    "authentication_required": "Your card was declined. This transaction requires authentication.",
}

# Minimum and maximum charge amounts (minor units) for the currencies tests use.
_MINIMUMS = {"usd": 50, "eur": 50, "gbp": 30, "cad": 50, "aud": 50, "chf": 50, "jpy": 50, "sek": 300}
_MAXIMUM = 99_999_999
_ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd"}
)
# Word lists, kept as text: one name per line would be longer than the logic using them.
_CURRENCIES = (
    frozenset(
        "usd eur gbp cad aud nzd chf jpy sek nok dkk pln czk huf ron bgn inr sgd hkd mxn brl zar "  # noqa: SIM905
        "ils try aed sar thb myr php idr krw twd cny clp cop pen vnd ugx".split()
    )
    | _ZERO_DECIMAL
)
_PI_PARAMS = frozenset(
    "amount currency customer payment_method off_session confirm metadata description expand "  # noqa: SIM905
    "statement_descriptor statement_descriptor_suffix receipt_email payment_method_types "
    "capture_method confirmation_method setup_future_usage error_on_requires_action return_url "
    "automatic_payment_methods use_stripe_sdk".split()
)
_REFUND_PARAMS = frozenset({"payment_intent", "charge", "amount", "metadata", "reason", "expand"})
_CUSTOMER_PARAMS = frozenset(
    "email name description phone metadata payment_method invoice_settings address expand".split()  # noqa: SIM905
)


# --- errors and responses ------------------------------------------------------------------------


class ApiError(Exception):
    """An error answer; ``saved`` when the endpoint began executing (idempotency saves it)."""

    def __init__(self, status: int, error: Json, *, saved: bool = False) -> None:
        super().__init__(error.get("message", ""))
        self.status = status
        self.error = error
        self.saved = saved


def invalid(
    message: str, *, code: str | None = None, param: str | None = None, status: int = 400
) -> ApiError:
    error: Json = {"message": message, "type": "invalid_request_error"}
    if code:
        error["code"] = code
        error["doc_url"] = _DOCS + code.replace("_", "-")
    if param:
        error["param"] = param
    return ApiError(status, error)


def missing(kind: str, object_id: str, *, param: str | None = None) -> ApiError:
    status = 400 if param else 404
    return invalid(f"No such {kind}: '{object_id}'", code="resource_missing", param=param, status=status)


def error_body(status: int) -> Json:
    """Stripe's body for an injected error status."""
    if status == 429:
        return {
            "code": "rate_limit",
            "message": "Request rate limit exceeded. Learn more about rate limits here "
            "https://stripe.com/docs/rate-limits.",
            "type": "invalid_request_error",
        }
    if status == 409:
        return {
            "code": "lock_timeout",
            "message": "This object cannot be accessed right now because another API request or Stripe "
            "process is currently accessing it.",
            "type": "invalid_request_error",
        }
    return {
        "message": "An unknown error occurred while processing your request. Please try again; "
        "if the problem persists, contact https://support.stripe.com/.",
        "type": "api_error",
    }


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _json(obj: Json) -> bytes:
    return json.dumps(obj, indent=2).encode()


# --- form parsing --------------------------------------------------------------------------------

_KEY = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")
_SUBKEY = re.compile(r"\[([^\[\]]*)\]")


class FormError(ValueError):
    pass


def parse_form(text: str) -> Json:
    """Stripe's form encoding (``metadata[k]=v``, ``expand[0]=x``, ``a[]=1``) -> nested dicts and lists.

    Values stay strings, as on the wire.
    """
    root: Json = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        match = _KEY.fullmatch(key)
        if match is None:
            raise FormError(f"Invalid parameter name: {key}")
        _assign(root, [match.group(1), *_SUBKEY.findall(match.group(2))], value, key)
    return _listify(root)


def _assign(node: Json, parts: list[str], value: str, key: str) -> None:
    for part in parts[:-1]:
        child = node.setdefault(part or str(len(node)), {})
        if not isinstance(child, dict):
            raise FormError(f"Invalid parameter: {key} mixes a value and an object")
        node = child
    last = parts[-1] or str(len(node))
    if last in node:
        raise FormError(f"Invalid parameter: {key} given twice or mixes a value and an object")
    node[last] = value


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    items = {key: _listify(child) for key, child in value.items()}
    if items and all(key.isdigit() for key in items):
        return [items[key] for key in sorted(items, key=int)]
    return items


# --- faults and the request log ------------------------------------------------------------------


@dataclass
class Fault:
    """Misbehaviour for the next ``times`` requests matching ``method`` and ``path``.

    ``path`` is exact, or a prefix when it ends with ``*``; ``None`` matches anything.
    """

    action: Literal["error", "hang", "drop"]
    when: When = "before"
    times: int = 1
    method: str | None = None
    path: str | None = None
    status: int = 500
    seconds: float = 0.0
    then: Literal["continue", "drop"] = "continue"
    headers: dict[str, str] = field(default_factory=dict)
    error: Json | None = None
    hits: int = 0

    def __post_init__(self) -> None:
        if self.when == "during" and self.action != "hang":
            raise ValueError("only a hang can happen during execution")
        if self.method:
            self.method = self.method.upper()

    @property
    def remaining(self) -> int:
        return self.times - self.hits

    def matches(self, method: str, path: str) -> bool:
        if self.remaining <= 0 or (self.method and self.method != method):
            return False
        if self.path is None:
            return True
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path == self.path

    def response(self) -> Response:
        headers = dict(self.headers)
        if self.when == "after" and self.status >= 500:
            headers.setdefault("Stripe-Should-Retry", "false")
        return Response(self.status, _json({"error": self.error or error_body(self.status)}), headers)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    query: Json
    form: Json
    idempotency_key: str | None
    status: int | None = None  # None: no answer was sent (dropped, or the fake stopped)
    replayed: bool = False
    fault: str | None = None

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == lowered), None)


@dataclass
class _Saved:
    method: str
    path: str
    params: Json
    at: datetime
    request_id: str
    response: Response | None = None  # None while the request is in progress


@dataclass
class _Call:
    """One request being served."""

    method: str
    path: str
    params: Json
    account: str
    idempotency_key: str | None
    record: RecordedRequest
    request_id: str


# --- the server ----------------------------------------------------------------------------------


class FakeStripe:
    """A Stripe-compatible API on 127.0.0.1; ``with FakeStripe() as fake: ... fake.url``.

    ``api_keys``: ``None`` accepts any ``sk_test_``/``rk_test_`` key of Stripe's shape (each key its
    own account); an iterable accepts only those keys; a mapping maps keys to account names (two
    keys of one account share objects and idempotency keys).
    """

    def __init__(
        self,
        *,
        api_keys: Iterable[str] | Mapping[str, str] | None = None,
        clock: Clock | None = None,
        strict_customers: bool = False,
        seed: int | None = None,
        port: int = 0,
    ) -> None:
        if api_keys is None:
            self._accounts: dict[str, str] | None = None
        elif isinstance(api_keys, Mapping):
            self._accounts = dict(api_keys)
        else:
            self._accounts = {key: key for key in api_keys}
        self.clock: Clock = clock or SystemClock()
        self.strict_customers = strict_customers
        self.search_index_lag = 0  # the N newest PaymentIntents are not searchable yet
        self._random = random.Random(seed)
        self._port = port
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._custom_cards: dict[str, TestCard] = {}
        self._routes = self._route_table()
        self._clear()

    # lifecycle

    def start(self) -> FakeStripe:
        if self._server is not None:
            raise RuntimeError("FakeStripe is already started")
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-stripe", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop promptly, even while requests hang: hung requests end without an answer."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeStripe:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeStripe is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # test controls

    def reset(self) -> None:
        """Forget every object, idempotency key, recorded request and pending fault."""
        with self._lock:
            self._clear()

    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def fail(
        self,
        status: int = 500,
        *,
        when: Literal["before", "after"] = "before",
        times: int = 1,
        method: str | None = None,
        path: str | None = None,
        headers: dict[str, str] | None = None,
        error: Json | None = None,
    ) -> Fault:
        """Answer ``status`` (500 ``api_error`` by default, or ``error``) before or after executing."""
        return self.add_fault(
            Fault("error", when, times, method, path, status=status, headers=dict(headers or {}), error=error)
        )

    def rate_limit(self, *, times: int = 1, method: str | None = None, path: str | None = None) -> Fault:
        """Answer 429 ``rate_limit`` before executing."""
        return self.add_fault(Fault("error", "before", times, method, path, status=429))

    def hang(
        self,
        seconds: float,
        *,
        when: When = "before",
        then: Literal["continue", "drop"] = "continue",
        times: int = 1,
        method: str | None = None,
        path: str | None = None,
    ) -> Fault:
        """Delay ``seconds`` before, during or after executing (see the module's docstring)."""
        return self.add_fault(Fault("hang", when, times, method, path, seconds=seconds, then=then))

    def drop(
        self,
        *,
        when: Literal["before", "after"] = "after",
        times: int = 1,
        method: str | None = None,
        path: str | None = None,
    ) -> Fault:
        """Close the connection without an answer, by default after executing."""
        return self.add_fault(Fault("drop", when, times, method, path))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def register_payment_method(self, payment_method_id: str, *, like: str = "pm_card_visa") -> None:
        """Make ``payment_method_id`` behave like one of Stripe's test payment methods."""
        with self._lock:
            self._custom_cards[payment_method_id] = TEST_CARDS[like]

    def add_customer(self, api_key: str, **fields: Any) -> Json:
        """Create a customer without HTTP (for ``strict_customers``); returns it."""
        with self._lock:
            customer = self._new_customer(fields)
            self._store(self._customers, customer, self._account(api_key))
            return copy.deepcopy(customer)

    # inspection (copies: mutating them changes nothing)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return copy.deepcopy(self._requests)

    @property
    def payment_intents(self) -> list[Json]:
        """Every PaymentIntent created (executions, not replays), failed ones too, oldest first."""
        with self._lock:
            return copy.deepcopy(list(self._payment_intents.values()))

    @property
    def customers(self) -> list[Json]:
        with self._lock:
            return copy.deepcopy(list(self._customers.values()))

    def charges(
        self,
        *,
        status: str | None = None,
        customer: str | None = None,
        api_key: str | None = None,
        **metadata: str,
    ) -> list[Json]:
        """PaymentIntents filtered by status, customer, account and metadata (``invoice_id=...``)."""
        with self._lock:
            found = [
                intent
                for intent in self._payment_intents.values()
                if (status is None or intent["status"] == status)
                and (customer is None or intent["customer"] == customer)
                and self._owned_by(intent, api_key)
                and all(intent["metadata"].get(key) == value for key, value in metadata.items())
            ]
            return copy.deepcopy(found)

    def refunds(
        self, *, payment_intent: str | None = None, api_key: str | None = None, **metadata: str
    ) -> list[Json]:
        with self._lock:
            found = [
                refund
                for refund in self._refunds.values()
                if (payment_intent is None or refund["payment_intent"] == payment_intent)
                and self._owned_by(refund, api_key)
                and all(refund["metadata"].get(key) == value for key, value in metadata.items())
            ]
            return copy.deepcopy(found)

    @property
    def errors(self) -> list[str]:
        """Tracebacks of the fake's own failures; a test may assert it is empty."""
        with self._lock:
            return list(self._errors)

    def account_of(self, api_key: str) -> str:
        return self._account(api_key)

    # state

    def _clear(self) -> None:
        self._payment_intents: dict[str, Json] = {}
        self._charges: dict[str, Json] = {}
        self._refunds: dict[str, Json] = {}
        self._customers: dict[str, Json] = {}
        self._owners: dict[str, str] = {}
        self._idempotency: dict[tuple[str, str], _Saved] = {}
        self._requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._errors: list[str] = []

    def _store(self, table: dict[str, Json], obj: Json, account: str) -> None:
        table[obj["id"]] = obj
        self._owners[obj["id"]] = account

    def _find(self, table: dict[str, Json], object_id: str, account: str) -> Json | None:
        obj = table.get(object_id)
        return obj if obj is not None and self._owners[object_id] == account else None

    def _owned_by(self, obj: Json, api_key: str | None) -> bool:
        return api_key is None or self._owners[obj["id"]] == self._account(api_key)

    def _account(self, api_key: str) -> str:
        if self._accounts is None:
            return api_key
        return self._accounts[api_key]

    def _new_id(self, prefix: str, length: int = 24) -> str:
        return prefix + "".join(self._random.choices(_ALNUM, k=length))

    def _now(self) -> int:
        return int(self.clock.now().timestamp())

    # serving: called on the connection's thread

    def _serve(self, http: _Handler) -> None:
        call = self._read(http)
        if call is None:
            return
        fault = self._take_fault(call)
        if fault is not None and fault.when == "before":
            if fault.action == "error":
                self._send(http, call, fault.response())
                return
            if fault.action == "drop" or not self._pause(fault.seconds) or fault.then == "drop":
                self._drop(http)
                return
        response, executed = self._execute(call, fault if fault and fault.when == "during" else None)
        if response is None:
            self._drop(http)
            return
        if fault is not None and fault.when == "after":
            response = self._after(call, fault, response, executed)
            if response is None:
                self._drop(http)
                return
        self._send(http, call, response)

    def _read(self, http: _Handler) -> _Call | None:
        """Parse, record and authenticate a request; answer it here when it is refused."""
        split = urlsplit(http.path)
        method = http.command.upper()
        length = http.headers.get("Content-Length", "0")
        body = http.rfile.read(int(length)).decode("utf-8", "replace") if length.isdigit() else ""
        key = http.headers.get("Idempotency-Key") if method == "POST" else None
        record = RecordedRequest(method, split.path, dict(http.headers.items()), {}, {}, key)
        with self._lock:
            call = _Call(method, split.path, {}, "", key, record, self._new_id("req_", 14))
            self._requests.append(record)
        try:
            call.account = self._authenticate(http.headers.get("Authorization"))
            self._check_request(http, call, body)
            record.query = parse_form(split.query)
            record.form = parse_form(body) if method == "POST" else {}
        except FormError as error:
            self._send(http, call, self._error_response(invalid(str(error))))
            return None
        except ApiError as error:
            self._send(http, call, self._error_response(error))
            return None
        call.params = record.form if method == "POST" else record.query
        return call

    def _check_request(self, http: _Handler, call: _Call, body: str) -> None:
        content_type = http.headers.get("Content-Type", "")
        if body and not content_type.startswith("application/x-www-form-urlencoded"):
            raise invalid(
                "Invalid request: the body must be application/x-www-form-urlencoded (Stripe's v1 API "
                f"does not read {content_type or 'this content type'})."
            )
        if call.idempotency_key is not None and len(call.idempotency_key) > 255:
            raise invalid("Idempotency-Key must be at most 255 characters long.", param="Idempotency-Key")

    def _authenticate(self, header: str | None) -> str:
        if not header:
            raise invalid(
                "You did not provide an API key. You need to provide your API key in the Authorization "
                "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
                status=401,
            )
        scheme, _, credentials = header.partition(" ")
        key = credentials.strip()
        if scheme.lower() == "basic":
            with suppress(ValueError):
                key = base64.b64decode(key).decode().partition(":")[0]
        if not self._accepts(key):
            raise invalid(f"Invalid API Key provided: {mask_key(key)}", status=401)
        return self._account(key)

    def _accepts(self, key: str) -> bool:
        if self._accounts is None:
            return DEFAULT_KEY_PATTERN.fullmatch(key) is not None
        return key in self._accounts

    def _take_fault(self, call: _Call) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(call.method, call.path):
                    fault.hits += 1
                    call.record.fault = f"{fault.action} {fault.when}"
                    return fault
        return None

    def _pause(self, seconds: float) -> bool:
        """Sleep unless the fake stops first; False when it stopped."""
        return not self._stopping.wait(seconds)

    def _execute(self, call: _Call, during: Fault | None) -> tuple[Response | None, bool]:
        """The answer (saved, replayed or not idempotent) and whether the endpoint executed now."""
        if call.idempotency_key is None:
            with self._lock:
                return self._run(call)
        scope = (call.account, call.idempotency_key)
        with self._lock:
            known = self._replay(call, scope)
            if known is not None:
                return known, False
            saved = _Saved(call.method, call.path, call.params, self.clock.now(), call.request_id)
            self._idempotency[scope] = saved
            if during is None:
                return self._run_saved(call, scope, saved)
        if not self._pause(during.seconds):
            with self._lock:
                self._idempotency.pop(scope, None)
            return None, False
        with self._lock:
            return self._run_saved(call, scope, saved)

    def _run_saved(self, call: _Call, scope: tuple[str, str], saved: _Saved) -> tuple[Response, bool]:
        response, executed = self._run(call)
        if executed:
            saved.response = response
        elif self._idempotency.get(scope) is saved:
            del self._idempotency[scope]
        return response, executed

    def _replay(self, call: _Call, scope: tuple[str, str]) -> Response | None:
        saved = self._idempotency.get(scope)
        if saved is not None and self.clock.now() - saved.at >= IDEMPOTENCY_TTL:
            del self._idempotency[scope]
            saved = None
        if saved is None:
            return None
        if saved.response is None:
            return self._error_response(
                invalid(
                    "There is currently another in-progress request using this Idempotent Key (that "
                    "probably means you submitted twice, and the other request is still going through): "
                    f"{call.request_id}. Please try again later.",
                    code="idempotency_key_in_use",
                    status=409,
                )
            )
        if (saved.method, saved.path) != (call.method, call.path) or saved.params != call.params:
            return self._error_response(_idempotency_error(call, saved))
        call.record.replayed = True
        headers = {
            **saved.response.headers,
            "Idempotent-Replayed": "true",
            "Original-Request": saved.request_id,
        }
        return Response(saved.response.status, saved.response.body, headers)

    def _run(self, call: _Call) -> tuple[Response, bool]:
        handler, ids = self._route(call.method, call.path)
        try:
            obj = handler(call, *ids)
        except ApiError as error:
            return self._error_response(error), error.saved
        except Exception as exc:  # a bug in the fake: answer 500, keep the traceback for the test
            self.record_error()
            return _bug_response(exc), False
        return Response(200, _json(obj)), True

    def record_error(self) -> None:
        with self._lock:
            self._errors.append(traceback.format_exc())

    def _after(self, call: _Call, fault: Fault, response: Response, executed: bool) -> Response | None:
        if fault.action == "drop":
            return None
        if fault.action == "hang":
            return response if self._pause(fault.seconds) and fault.then == "continue" else None
        injected = fault.response()
        if executed and call.idempotency_key is not None:
            with self._lock:
                saved = self._idempotency.get((call.account, call.idempotency_key))
                if saved is not None:
                    saved.response = injected
        return injected

    def _error_response(self, error: ApiError) -> Response:
        return Response(error.status, _json({"error": error.error}), _error_headers(error.status))

    def _send(self, http: _Handler, call: _Call, response: Response) -> None:
        headers = {
            "Content-Type": "application/json",
            "Content-Length": str(len(response.body)),
            "Request-Id": call.request_id,
            "Stripe-Version": http.headers.get("Stripe-Version") or API_VERSION,
            **response.headers,
        }
        if call.idempotency_key is not None:
            headers["Idempotency-Key"] = call.idempotency_key
        with self._lock:  # before writing: the client may look as soon as it has the answer
            call.record.status = response.status
        try:
            http.send_response(response.status)
            for name, value in headers.items():
                http.send_header(name, value)
            http.end_headers()
            http.wfile.write(response.body)
            http.wfile.flush()
        except OSError:
            http.close_connection = True
            with self._lock:
                call.record.status = None

    def _drop(self, http: _Handler) -> None:
        http.close_connection = True
        with suppress(OSError):
            http.connection.shutdown(socket.SHUT_RDWR)

    # routing

    def _route_table(self) -> list[tuple[str, re.Pattern[str], Callable[..., Json]]]:
        object_id = r"([A-Za-z0-9_]+)"
        return [
            ("POST", re.compile(r"/v1/payment_intents"), self._create_payment_intent),
            ("GET", re.compile(r"/v1/payment_intents/search"), self._search_payment_intents),
            ("GET", re.compile(rf"/v1/payment_intents/{object_id}"), self._retrieve_payment_intent),
            ("POST", re.compile(r"/v1/refunds"), self._create_refund),
            ("GET", re.compile(rf"/v1/refunds/{object_id}"), self._retrieve_refund),
            ("GET", re.compile(rf"/v1/charges/{object_id}"), self._retrieve_charge),
            ("POST", re.compile(r"/v1/customers"), self._create_customer),
            ("GET", re.compile(rf"/v1/customers/{object_id}"), self._retrieve_customer),
        ]

    def _route(self, method: str, path: str) -> tuple[Callable[..., Json], tuple[str, ...]]:
        for route_method, pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if match is not None and route_method == method:
                return handler, match.groups()
        return _unknown_route(method, path), ()

    # PaymentIntents

    def _create_payment_intent(self, call: _Call) -> Json:
        params = call.params
        _check_known(params, _PI_PARAMS)
        amount = _amount(params, "amount")
        currency = _currency(params)
        _check_amount_range(amount, currency)
        confirm = _boolean(params, "confirm")
        off_session = _off_session(params)
        if off_session and not confirm:
            raise invalid("You may only specify `off_session` when `confirm` is true.", param="off_session")
        customer = self._customer_param(call)
        card = self._card_param(params.get("payment_method"))
        if confirm and card is None:
            raise invalid(
                "You cannot confirm this PaymentIntent because it's missing a payment method. Specify "
                "`payment_method` (a PaymentMethod attached to the customer).",
                code="parameter_missing",
                param="payment_method",
            )
        expand = _expand(params, {"latest_charge", "payment_method", "customer"})
        intent = self._new_payment_intent(params, amount, currency, customer)
        self._store(self._payment_intents, intent, call.account)
        failure = self._confirm(call, intent, card, off_session) if confirm and card else None
        if failure is not None:
            raise failure
        return self._render_intent(intent, expand, call.account)

    def _customer_param(self, call: _Call) -> str | None:
        customer = call.params.get("customer")
        if customer is None or customer == "":
            return None
        if not isinstance(customer, str):
            raise invalid("Invalid string: customer must be a customer id.", param="customer")
        if self.strict_customers and self._find(self._customers, customer, call.account) is None:
            raise missing("customer", customer, param="customer")
        return customer

    def _card_param(self, payment_method: Any) -> TestCard | None:
        if payment_method is None or payment_method == "":
            return None
        if not isinstance(payment_method, str):
            raise invalid(
                "Invalid string: payment_method must be a PaymentMethod id.", param="payment_method"
            )
        card = self._custom_cards.get(payment_method) or TEST_CARDS.get(payment_method)
        if card is None:
            raise missing("PaymentMethod", payment_method, param="payment_method")
        return card

    def _new_payment_intent(self, params: Json, amount: int, currency: str, customer: str | None) -> Json:
        intent_id = self._new_id("pi_")
        payment_method = params.get("payment_method") or None
        return {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_details": {"tip": {}},
            "amount_received": 0,
            "application": None,
            "application_fee_amount": None,
            "automatic_payment_methods": None,
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": "automatic_async",
            "client_secret": f"{intent_id}_secret_{self._new_id('', 25)}",
            "confirmation_method": "automatic",
            "created": self._now(),
            "currency": currency,
            "customer": customer,
            "description": params.get("description"),
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": _metadata(params),
            "next_action": None,
            "on_behalf_of": None,
            "payment_method": payment_method,
            "payment_method_configuration_details": None,
            "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
            "payment_method_types": params.get("payment_method_types") or ["card"],
            "processing": None,
            "receipt_email": params.get("receipt_email"),
            "review": None,
            "setup_future_usage": params.get("setup_future_usage"),
            "shipping": None,
            "source": None,
            "statement_descriptor": params.get("statement_descriptor"),
            "statement_descriptor_suffix": params.get("statement_descriptor_suffix"),
            "status": "requires_confirmation" if payment_method else "requires_payment_method",
            "transfer_data": None,
            "transfer_group": None,
        }

    def _confirm(self, call: _Call, intent: Json, card: TestCard, off_session: bool) -> ApiError | None:
        """Attempt the payment; the card error to answer (already applied to ``intent``) or None."""
        if card.needs_authentication and not off_session:
            intent["status"] = "requires_action"
            intent["next_action"] = {
                "type": "use_stripe_sdk",
                "use_stripe_sdk": {"type": "three_d_secure_redirect"},
            }
            return None
        charge = self._new_charge(intent, card)
        self._store(self._charges, charge, call.account)
        intent["latest_charge"] = charge["id"]
        if card.code is None:
            intent["status"] = "succeeded"
            intent["amount_received"] = intent["amount"]
            return None
        payment_method = self._payment_method_object(intent["payment_method"], card)
        error = _card_error(card, charge["id"], payment_method)
        intent["status"] = "requires_payment_method"
        intent["payment_method"] = None
        intent["last_payment_error"] = error
        body = {
            **error,
            "payment_intent": copy.deepcopy(intent),
            "request_log_url": f"https://dashboard.stripe.com/test/logs/{call.request_id}",
        }
        return ApiError(402, body, saved=True)

    def _new_charge(self, intent: Json, card: TestCard) -> Json:
        succeeded = card.code is None
        outcome = {
            "network_status": "approved_by_network" if succeeded else "declined_by_network",
            "reason": None if succeeded else card.decline_code,
            "risk_level": "normal",
            "seller_message": "Payment complete." if succeeded else "The bank declined the payment.",
            "type": "authorized" if succeeded else "issuer_declined",
        }
        return {
            "id": self._new_id("ch_"),
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount"] if succeeded else 0,
            "amount_refunded": 0,
            "balance_transaction": self._new_id("txn_") if succeeded else None,
            "captured": succeeded,
            "created": self._now(),
            "currency": intent["currency"],
            "customer": intent["customer"],
            "description": intent["description"],
            "failure_code": card.code,
            "failure_message": None if succeeded else _message(card),
            "livemode": False,
            "metadata": dict(intent["metadata"]),
            "outcome": outcome,
            "paid": succeeded,
            "payment_intent": intent["id"],
            "payment_method": intent["payment_method"],
            "payment_method_details": {"card": _card_details(card, self.clock.now().year), "type": "card"},
            "refunded": False,
            "status": "succeeded" if succeeded else "failed",
        }

    def _payment_method_object(self, payment_method_id: str, card: TestCard) -> Json:
        return {
            "id": payment_method_id,
            "object": "payment_method",
            "allow_redisplay": "unspecified",
            "billing_details": {
                "address": dict.fromkeys(("city", "country", "line1", "line2", "postal_code", "state")),
                "email": None,
                "name": None,
                "phone": None,
            },
            "card": _card_details(card, self.clock.now().year),
            "created": self._now(),
            "customer": None,
            "livemode": False,
            "metadata": {},
            "type": "card",
        }

    def _render_intent(self, intent: Json, expand: set[str], account: str) -> Json:
        rendered = copy.deepcopy(intent)
        if "latest_charge" in expand and intent["latest_charge"]:
            rendered["latest_charge"] = copy.deepcopy(self._charges[intent["latest_charge"]])
        if "payment_method" in expand and intent["payment_method"]:
            card = self._card_param(intent["payment_method"])
            if card is not None:
                rendered["payment_method"] = self._payment_method_object(intent["payment_method"], card)
        if "customer" in expand and intent["customer"]:
            customer = self._find(self._customers, intent["customer"], account)
            rendered["customer"] = copy.deepcopy(customer) if customer else intent["customer"]
        return rendered

    def _retrieve_payment_intent(self, call: _Call, intent_id: str) -> Json:
        expand = _expand(call.params, {"latest_charge", "payment_method", "customer"})
        intent = self._find(self._payment_intents, intent_id, call.account)
        if intent is None:
            raise missing("payment_intent", intent_id)
        return self._render_intent(intent, expand, call.account)

    def _search_payment_intents(self, call: _Call) -> Json:
        params = call.params
        _check_known(params, {"query", "limit", "page", "expand"})
        query = params.get("query")
        if not isinstance(query, str) or not query.strip():
            raise invalid("Missing required param: query.", code="parameter_missing", param="query")
        match = parse_search_query(query)
        limit = _int(params, "limit", default=10)
        if not 1 <= limit <= 100:
            raise invalid("Invalid limit: must be between 1 and 100.", param="limit")
        offset = _page_offset(params.get("page"))
        expand = {item.removeprefix("data.") for item in _expand(params, _SEARCH_EXPANDABLE)}
        visible = [
            intent
            for intent in self._searchable()
            if self._owners[intent["id"]] == call.account and match(intent)
        ]
        visible.sort(key=lambda intent: intent["created"], reverse=True)  # stable: newest first
        page = visible[offset : offset + limit]
        has_more = offset + limit < len(visible)
        return {
            "object": "search_result",
            "data": [self._render_intent(intent, expand, call.account) for intent in page],
            "has_more": has_more,
            "next_page": f"page_{offset + limit}" if has_more else None,
            "url": "/v1/payment_intents/search",
        }

    def _searchable(self) -> list[Json]:
        intents = list(self._payment_intents.values())
        hidden = min(self.search_index_lag, len(intents))
        return list(reversed(intents[: len(intents) - hidden]))

    # refunds

    def _create_refund(self, call: _Call) -> Json:
        params = call.params
        _check_known(params, _REFUND_PARAMS)
        charge = self._refunded_charge(call)
        left = charge["amount_captured"] - charge["amount_refunded"]
        if left <= 0:
            raise invalid(f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded")
        amount = left if params.get("amount") is None else _amount(params, "amount")
        if amount > left:
            raise invalid(
                f"Refund amount ({_money(amount, charge['currency'])}) is greater than unrefunded amount "
                f"on charge ({_money(left, charge['currency'])})",
                code="amount_too_large",
                param="amount",
            )
        reason = params.get("reason")
        if reason not in (None, "duplicate", "fraudulent", "requested_by_customer"):
            raise invalid(f"Invalid reason: {reason}", param="reason")
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount_captured"]
        refund = self._new_refund(charge, amount, reason, _metadata(params))
        self._store(self._refunds, refund, call.account)
        return copy.deepcopy(refund)

    def _refunded_charge(self, call: _Call) -> Json:
        intent_id, charge_id = call.params.get("payment_intent"), call.params.get("charge")
        if not intent_id and not charge_id:
            raise invalid(
                "One of the following params should be provided for this request: payment_intent or charge.",
                code="parameter_missing",
            )
        if charge_id:
            charge = self._find(self._charges, str(charge_id), call.account)
            if charge is None:
                raise missing("charge", str(charge_id), param="charge")
        else:
            intent = self._find(self._payment_intents, str(intent_id), call.account)
            if intent is None:
                raise missing("payment_intent", str(intent_id), param="payment_intent")
            charge = self._charges.get(intent["latest_charge"] or "")
        if charge is None or charge["status"] != "succeeded":
            raise invalid(
                f"This PaymentIntent ({intent_id or charge_id}) does not have a successful charge to refund.",
                code="charge_not_refundable" if charge_id else "payment_intent_unexpected_state",
            )
        return charge

    def _new_refund(self, charge: Json, amount: int, reason: str | None, metadata: Json) -> Json:
        return {
            "id": self._new_id("re_"),
            "object": "refund",
            "amount": amount,
            "balance_transaction": self._new_id("txn_"),
            "charge": charge["id"],
            "created": self._now(),
            "currency": charge["currency"],
            "destination_details": {
                "card": {"type": "refund", "reference_status": "pending"},
                "type": "card",
            },
            "metadata": metadata,
            "payment_intent": charge["payment_intent"],
            "reason": reason,
            "receipt_number": None,
            "source_transfer_reversal": None,
            "status": "succeeded",
            "transfer_reversal": None,
        }

    def _retrieve_refund(self, call: _Call, refund_id: str) -> Json:
        refund = self._find(self._refunds, refund_id, call.account)
        if refund is None:
            raise missing("refund", refund_id)
        return copy.deepcopy(refund)

    def _retrieve_charge(self, call: _Call, charge_id: str) -> Json:
        charge = self._find(self._charges, charge_id, call.account)
        if charge is None:
            raise missing("charge", charge_id)
        return copy.deepcopy(charge)

    # customers

    def _create_customer(self, call: _Call) -> Json:
        _check_known(call.params, _CUSTOMER_PARAMS)
        customer = self._new_customer(call.params)
        self._store(self._customers, customer, call.account)
        return copy.deepcopy(customer)

    def _new_customer(self, params: Json) -> Json:
        settings = params.get("invoice_settings") or {}
        default_payment_method = (
            settings.get("default_payment_method") if isinstance(settings, dict) else None
        )
        return {
            "id": params.get("id") or self._new_id("cus_", 14),
            "object": "customer",
            "address": params.get("address"),
            "balance": 0,
            "created": self._now(),
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": params.get("description"),
            "email": params.get("email"),
            "invoice_prefix": self._new_id("", 8).upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": default_payment_method or params.get("payment_method"),
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": _metadata(params),
            "name": params.get("name"),
            "next_invoice_sequence": 1,
            "phone": params.get("phone"),
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }

    def _retrieve_customer(self, call: _Call, customer_id: str) -> Json:
        customer = self._find(self._customers, customer_id, call.account)
        if customer is None:
            raise missing("customer", customer_id)
        return copy.deepcopy(customer)


# --- helpers for the endpoints -------------------------------------------------------------------

_SEARCH_EXPANDABLE = {"data.latest_charge", "data.payment_method", "data.customer"}


def mask_key(key: str) -> str:
    """``sk_test_****...1234``: Stripe never echoes a whole key."""
    if len(key) <= 12:
        return "*" * len(key)
    prefix = key[:8] if DEFAULT_KEY_PATTERN.fullmatch(key) else ""
    return prefix + "*" * (len(key) - len(prefix) - 4) + key[-4:]


def _bug_response(exc: Exception) -> Response:
    return Response(500, _json({"error": {"message": f"fake Stripe bug: {exc!r}", "type": "api_error"}}))


def _error_headers(status: int) -> dict[str, str]:
    return {"WWW-Authenticate": 'Bearer realm="Stripe"'} if status == 401 else {}


def _idempotency_error(call: _Call, saved: _Saved) -> ApiError:
    if (saved.method, saved.path) != (call.method, call.path):
        message = (
            "Keys for idempotent requests can only be used for the same endpoint they were first used for "
            f"('{saved.method} {saved.path}' vs '{call.method} {call.path}'). Try using a key other than "
            f"'{call.idempotency_key}' if you meant to execute a different request."
        )
    else:
        message = (
            "Keys for idempotent requests can only be used with the same parameters they were first used "
            f"with. Try using a key other than '{call.idempotency_key}' if you meant to execute a "
            "different request."
        )
    return ApiError(400, {"message": message, "type": "idempotency_error"})


def _unknown_route(method: str, path: str) -> Callable[..., Json]:
    def handler(call: _Call) -> Json:
        raise invalid(
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can "
            "help at https://support.stripe.com/.",
            status=404,
        )

    return handler


def _check_known(params: Json, known: Iterable[str]) -> None:
    for name in params:
        if name not in known:
            raise invalid(f"Received unknown parameter: {name}", code="parameter_unknown", param=name)


def _int(params: Json, name: str, *, default: int | None = None) -> int:
    value = params.get(name)
    if value is None:
        if default is None:
            raise invalid(f"Missing required param: {name}.", code="parameter_missing", param=name)
        return default
    if not isinstance(value, str) or not re.fullmatch(r"-?[0-9]+", value):
        raise invalid(f"Invalid integer: {value}", code="parameter_invalid_integer", param=name)
    return int(value)


def _amount(params: Json, name: str) -> int:
    value = _int(params, name)
    if value < 1:
        raise invalid(
            "This value must be greater than or equal to 1.", code="parameter_invalid_integer", param=name
        )
    return value


def _currency(params: Json) -> str:
    value = params.get("currency")
    if value is None:
        raise invalid("Missing required param: currency.", code="parameter_missing", param="currency")
    currency = value.lower() if isinstance(value, str) else ""
    if currency not in _CURRENCIES:
        raise invalid(f"Invalid currency: {value}.", code="parameter_invalid_string", param="currency")
    return currency


def _check_amount_range(amount: int, currency: str) -> None:
    minimum = _MINIMUMS.get(currency, 1)
    if amount < minimum:
        raise invalid(
            f"Amount must be at least {_money(minimum, currency)} {currency}",
            code="amount_too_small",
            param="amount",
        )
    if amount > _MAXIMUM:
        raise invalid(
            f"Amount must be no more than {_money(_MAXIMUM, currency)} {currency}",
            code="amount_too_large",
            param="amount",
        )


def _money(amount: int, currency: str) -> str:
    symbol = "$" if currency == "usd" else ""
    if currency in _ZERO_DECIMAL:
        return f"{symbol}{amount}"
    major, minor = divmod(amount, 100)
    return f"{symbol}{major}.{minor:02d}"


def _boolean(params: Json, name: str) -> bool:
    value = params.get(name)
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise invalid(f"Invalid boolean: {value}", param=name)


def _off_session(params: Json) -> bool:
    value = params.get("off_session")
    if value in ("one_off", "recurring"):
        return True
    return _boolean(params, "off_session")


def _expand(params: Json, allowed: set[str]) -> set[str]:
    value = params.get("expand")
    if value is None:
        return set()
    items = value if isinstance(value, list) else [value]
    for item in items:
        if item not in allowed:
            raise invalid(f"This property cannot be expanded ({item}).", param="expand")
    return set(items)


def _metadata(params: Json) -> dict[str, str]:
    value = params.get("metadata")
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise invalid("Invalid object", param="metadata")
    if len(value) > 50:
        raise invalid("Metadata can have at most 50 keys.", param="metadata")
    metadata = {}
    for key, item in value.items():
        if len(key) > 40 or not isinstance(item, str) or len(item) > 500:
            raise invalid(
                "Metadata keys must be at most 40 characters and values strings of at most 500 characters.",
                param=f"metadata[{key}]",
            )
        if item != "":
            metadata[key] = item
    return metadata


def _page_offset(page: Any) -> int:
    if page is None:
        return 0
    match = re.fullmatch(r"page_([0-9]+)", page) if isinstance(page, str) else None
    if match is None:
        raise invalid(f"Invalid page: {page}", param="page")
    return int(match.group(1))


def _message(card: TestCard) -> str:
    return _MESSAGES.get(card.decline_code or "", _DECLINED)


def _card_error(card: TestCard, charge_id: str, payment_method: Json) -> Json:
    assert card.code is not None
    error: Json = {
        "charge": charge_id,
        "code": card.code,
        "decline_code": card.decline_code,
        "doc_url": _DOCS + card.code.replace("_", "-"),
        "message": _message(card),
        "payment_method": payment_method,
        "type": "card_error",
    }
    if card.param:
        error["param"] = card.param
    return error


def _card_details(card: TestCard, year: int) -> Json:
    return {
        "brand": card.brand,
        "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
        "country": "US",
        "display_brand": card.brand,
        "exp_month": 12,
        "exp_year": year + 2,
        "fingerprint": hashlib.sha256(f"{card.brand}{card.last4}".encode()).hexdigest()[:16],
        "funding": card.funding,
        "last4": card.last4,
        "networks": {"available": [card.brand], "preferred": None},
        "wallet": None,
    }


# --- search queries ------------------------------------------------------------------------------

_CLAUSE = re.compile(
    r"""(?P<negate>-)?
    (?P<field>metadata\[(?:'[^']*'|"[^"]*")\]|[a-z_]+)
    \s*(?P<op>:|>=|<=|>|<)\s*
    (?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|-?[0-9]+)""",
    re.VERBOSE,
)
_CONNECTOR = re.compile(r"\s+(?:(AND|OR)\s+)?", re.IGNORECASE)
_SEARCH_FIELDS = {"amount", "created", "currency", "customer", "status"}
_NUMERIC_FIELDS = {"amount", "created"}
Predicate = Callable[[Json], bool]


def parse_search_query(query: str) -> Predicate:
    """Stripe's search language for PaymentIntents: ``metadata['k']:'v' AND status:'succeeded'``,
    ``amount>1000``, ``-currency:'eur'``; clauses joined by spaces, AND or OR (not both)."""
    text = query.strip()
    clauses: list[Predicate] = []
    connectors: set[str] = set()
    position = 0
    while True:
        match = _CLAUSE.match(text, position)
        if match is None:
            raise _bad_query(query)
        clauses.append(_clause(match, query))
        if match.end() == len(text):
            break
        connector = _CONNECTOR.match(text, match.end())
        if connector is None:
            raise _bad_query(query)
        connectors.add((connector.group(1) or "AND").upper())
        position = connector.end()
    if len(connectors) > 1 or len(clauses) > 10:
        raise _bad_query(query)
    combine = any if connectors == {"OR"} else all

    def matches(intent: Json) -> bool:
        return combine(clause(intent) for clause in clauses)

    return matches


def _clause(match: re.Match[str], query: str) -> Predicate:
    name, op, raw = match.group("field"), match.group("op"), match.group("value")
    quoted = raw[0] in "'\""
    value = re.sub(r"\\(.)", r"\1", raw[1:-1]) if quoted else raw
    if name.startswith("metadata[") and op == ":" and quoted:
        test = _metadata_test(name[len("metadata[") + 1 : -2], value)
    elif name in _NUMERIC_FIELDS and not quoted:
        test = _numeric_test(name, op, int(value))
    elif name in _SEARCH_FIELDS and op == ":" and quoted:
        test = _equality_test(name, value)
    else:
        raise _bad_query(query)
    negate = bool(match.group("negate"))

    def matches(intent: Json) -> bool:
        return test(intent) != negate

    return matches


def _metadata_test(key: str, value: str) -> Predicate:
    def matches(intent: Json) -> bool:
        return bool(intent["metadata"].get(key) == value)

    return matches


def _equality_test(name: str, value: str) -> Predicate:
    def matches(intent: Json) -> bool:
        return bool(intent[name] == value)

    return matches


def _numeric_test(name: str, op: str, number: int) -> Predicate:
    compare: dict[str, Callable[[int, int], bool]] = {
        ":": int.__eq__,
        ">": int.__gt__,
        "<": int.__lt__,
        ">=": int.__ge__,
        "<=": int.__le__,
    }

    def matches(intent: Json) -> bool:
        return compare[op](intent[name], number)

    return matches


def _bad_query(query: str) -> ApiError:
    return invalid(
        f"We were unable to parse your search query: {query!r}. "
        "Try using the format `metadata['key']:'value'`.",
        param="query",
    )


# --- HTTP plumbing -------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeStripe) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (socket.getfqdn), which can stall.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up mid-answer are expected; anything else is kept in ``FakeStripe.errors``."""
        if not isinstance(sys.exc_info()[1], OSError):
            self.fake.record_error()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.fake._lock:
            self.server.fake._connections.add(self.connection)

    def finish(self) -> None:
        try:
            with suppress(OSError):
                super().finish()
        finally:
            with self.server.fake._lock:
                self.server.fake._connections.discard(self.connection)

    def do_GET(self) -> None:
        self.server.fake._serve(self)

    def do_POST(self) -> None:
        self.server.fake._serve(self)

    def do_DELETE(self) -> None:
        self.server.fake._serve(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the fake's request log is ``FakeStripe.requests``."""


# --- pytest --------------------------------------------------------------------------------------


@pytest.fixture
def fake_stripe(clock: FrozenClock) -> Iterator[FakeStripe]:
    """A started fake on the suite's frozen ``clock``, stopped after the test; import it into a
    conftest to use it. Advancing the clock by 24 hours expires the fake's idempotency keys."""
    with FakeStripe(clock=clock) as fake:
        yield fake
    assert fake.errors == [], "the fake Stripe failed:\n" + "\n".join(fake.errors)
