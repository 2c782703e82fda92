"""What every finance page shares: the signed-in user, CSRF-checked forms, redirects, errors."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Request, Response
from litestar.datastructures import Cookie
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.response import Redirect

from billing.core.context import AppContext
from billing.core.errors import ApiError
from billing.finance import pages
from billing.finance.session import CSRF_FIELD, SESSION_COOKIE, FinanceUser, current_user, same_token

LOGIN_PATH = "/finance/login"
HOME_PATH = "/finance"


class LoginRequired(Exception):
    """No valid session: the browser is sent to the login page."""


class CsrfRefused(Exception):
    """A form arrived without this session's CSRF token."""


async def provide_user(request: Request[Any, Any, Any]) -> FinanceUser:
    ctx: AppContext = request.app.state.ctx
    user = await current_user(ctx, request.cookies.get(SESSION_COOKIE))
    if user is None:
        raise LoginRequired()
    return user


User = NamedDependency[FinanceUser]
USER_DEPENDENCY = {"user": Provide(provide_user)}


async def checked_form(request: Request[Any, Any, Any], user: FinanceUser) -> dict[str, str]:
    """The posted form, once its CSRF token is this session's."""
    form = await request.form()
    token = form.get(CSRF_FIELD)
    if not isinstance(token, str) or not same_token(user.csrf_token, token):
        raise CsrfRefused()
    return {key: value for key, value in form.items() if isinstance(value, str)}


def see_other(path: str, *, cookies: list[Cookie] | None = None) -> Redirect:
    return Redirect(path=path, status_code=303, cookies=cookies, headers={"Cache-Control": "no-store"})


def safe_next(path: str | None) -> str:
    """Only a path of our own pages, never another site (``//evil`` or ``/\\evil``)."""
    if path and path.startswith("/finance") and not path.startswith(("//", "/\\")) and "\\" not in path:
        return path
    return HOME_PATH


def session_cookie(request: Request[Any, Any, Any], name: str, value: str, max_age: int) -> Cookie:
    return Cookie(
        key=name,
        value=value,
        path="/finance",
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def expired_cookie(request: Request[Any, Any, Any], name: str) -> Cookie:
    return session_cookie(request, name, "", 0)


def _secure(request: Request[Any, Any, Any]) -> bool:
    ctx: AppContext = request.app.state.ctx
    return request.url.scheme == "https" or ctx.settings.production


def to_login(request: Request[Any, Any, Any], _: Exception) -> Response[Any]:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return see_other(f"{LOGIN_PATH}?next={quote(target, safe='')}")


def csrf_refused(_: Request[Any, Any, Any], __: Exception) -> Response[Any]:
    return pages.render(
        "error.html",
        status_code=403,
        title="Form refused",
        message="This form has expired or did not come from these pages. Go back, reload and try again.",
        user=None,
    )


def api_error_page(_: Request[Any, Any, Any], exc: ApiError) -> Response[Any]:
    return pages.render("error.html", status_code=exc.status, title=exc.title, message=exc.detail, user=None)


def http_error_page(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    return pages.render(
        "error.html", status_code=exc.status_code, title="Request refused", message=exc.detail, user=None
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    LoginRequired: to_login,
    CsrfRefused: csrf_refused,
    ApiError: api_error_page,
    HTTPException: http_error_page,
}
