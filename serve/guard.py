"""What the web server refuses before Gradio sees a request, for a page served to a network (`--host 0.0.0.0`).

Gradio limits the size of uploaded files, but reads any other request's body whole into memory: a photo sent
inline as a `data:` URL inside the JSON of an API call had no limit, and four 150 MB bodies took the server to
2.4 GB. Its file route also fetches web addresses (`/gradio_api/file=http://...`), which an offline app must not
do, and its deep-link route writes a snapshot of the session to disk, where it stays.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from data.images import MAX_FILE_BYTES

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UPLOAD_ROUTE = "/gradio_api/upload"  # Gradio's own `max_file_size` limits each file there
MAX_BODY_BYTES = MAX_FILE_BYTES * 4 // 3 + 2**20  # the largest photo SpotCheck takes, base64-encoded, and the JSON
REFUSED_PATHS = ("/gradio_api/file=http", "/gradio_api/file=//", "/gradio_api/deep_link")
HEADERS = [(b"x-frame-options", b"DENY")]  # the page is not to be shown inside another site's frame
FILE_ROUTE = "/gradio_api/file="  # the photo's copies (heatmap, framing view): kept in no cache
NO_STORE = (b"cache-control", b"no-store")


class RequestGuard:
    """ASGI middleware: 413 for a body over MAX_BODY_BYTES (declared or streamed) except on the upload route,
    403 for the REFUSED_PATHS, HEADERS on every response and NO_STORE on the file route's."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path.lower().startswith(REFUSED_PATHS):
            await _refuse(send, 403, b"SpotCheck does not fetch or keep anything at this address.")
            return
        if path.rstrip("/") != UPLOAD_ROUTE:
            declared = dict(scope.get("headers", [])).get(b"content-length", b"0")
            if not declared.isdigit() or int(declared) > self.max_body:
                await _refuse(send, 413, b"The request is too large.")
                return
            receive = _counted(receive, self.max_body)

        extra = [*HEADERS, NO_STORE] if path.startswith(FILE_ROUTE) else HEADERS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyTooLarge(Exception):
    """A streamed (chunked) body went past the limit its headers did not declare."""


def _counted(receive: Receive, limit: int) -> Receive:
    received = 0

    async def counting() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise BodyTooLarge(f"request body over {limit} bytes")
        return message

    return counting


async def _refuse(send: Send, status: int, text: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), *HEADERS]})
    await send({"type": "http.response.body", "body": text})
