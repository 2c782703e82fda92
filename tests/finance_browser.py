"""A cookie-keeping client for the finance pages: log in, read CSRF tokens, post forms."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import httpx

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(page: str) -> str:
    found = CSRF.search(page)
    assert found is not None, "no CSRF token on the page"
    return html.unescape(found.group(1))


@dataclass
class FinanceBrowser:
    client: httpx.AsyncClient
    token: str | None = None

    async def get(self, path: str, **params: str) -> httpx.Response:
        response = await self.client.get(path, params=params or None)
        if response.status_code == 200 and "text/html" in response.headers.get("content-type", ""):
            found = CSRF.search(response.text)
            if found is not None:
                self.token = html.unescape(found.group(1))
        return response

    async def log_in(self, key: str, next_path: str | None = None) -> httpx.Response:
        form = await self.get("/finance/login", **({"next": next_path} if next_path else {}))
        assert form.status_code == 200, form.text
        data = {"api_key": key, "csrf_token": csrf_token(form.text), "next": next_path or "/finance"}
        return await self.client.post("/finance/login", data=data)

    async def submit(self, path: str, data: dict[str, str] | None = None) -> httpx.Response:
        """Post a form as the page would, with the session's CSRF token."""
        assert self.token is not None, "load a page of the session first"
        return await self.client.post(path, data={"csrf_token": self.token, **(data or {})})
