"""OPTIONS on every route: 204 with ``Allow`` listing the route's methods, and no key needed.

Litestar gives each route an OPTIONS handler that answers this way, but makes it for the first
handlers registered on a path and keeps it when the path's other handlers join the route, so
that its ``Allow`` leaves them out (``GET, OPTIONS`` where PATCH is allowed too; litestar#4169,
fixed in Litestar 3). :func:`record_allowed_methods` writes each route's own methods into its
OPTIONS handler's ``opt``, and :func:`answer_options`, a ``before_request`` hook, answers with them.

The authentication middleware does not authenticate OPTIONS (Litestar's default), and the scope
guard lets it through: the answer tells nothing but the methods of a path.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request, Response
from litestar.enums import HttpMethod, MediaType
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_204_NO_CONTENT

OPT_ALLOW = "allow"


def record_allowed_methods(app: Litestar) -> None:
    """Note on each route's OPTIONS handler the methods of the whole route; once the app is built."""
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            handler, _ = route.route_handler_map[HttpMethod.OPTIONS]
            handler.opt[OPT_ALLOW] = ", ".join(sorted(route.methods))


def answer_options(request: Request[Any, Any, Any]) -> Response[None] | None:
    """The answer to OPTIONS, instead of the route's OPTIONS handler; None for any other method."""
    allow = request.route_handler.opt.get(OPT_ALLOW)
    if request.method != HttpMethod.OPTIONS or allow is None:
        return None
    return Response(
        None, status_code=HTTP_204_NO_CONTENT, media_type=MediaType.TEXT, headers={"Allow": allow}
    )
