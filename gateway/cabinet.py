"""The customer cabinet: static HTML, CSS and JavaScript (`gateway/static/`, no build step) served
at `/`, calling the gateway's own /v1 API with the customer's bearer token (docs/cabinet.md)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = "/cabinet"
# Only the cabinet's own files and the API of this origin: no inline script, nothing third-party.
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


class _Hardened:
    """The cabinet's files with the security headers (the page never embeds anything foreign)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def cabinet() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=dict(_text(HEADERS)))

    app.mount(ASSETS, _Hardened(StaticFiles(directory=STATIC)), name="cabinet")


def _text(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(name.decode(), value.decode()) for name, value in headers]
