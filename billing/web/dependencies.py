"""What route handlers are given by name: ``ctx: Ctx`` (the app's context) and ``principal: Caller``."""

from __future__ import annotations

from typing import Any, TypeVar

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import SkipValidation

from billing.core.context import AppContext
from billing.core.errors import Unauthorized
from billing.web.auth import Principal


def provide_context(state: State) -> AppContext:
    ctx: AppContext = state.ctx
    return ctx


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    if not isinstance(request.auth, Principal):
        raise Unauthorized()
    return request.auth


Ctx = NamedDependency[AppContext]
Caller = NamedDependency[Principal]
T = TypeVar("T")
# An interface that a lower domain owns and a higher one implements, provided by the composition
# root under the parameter's name; never validated (a Protocol is no type to check a value with).
Port = NamedDependency[SkipValidation[T]]
