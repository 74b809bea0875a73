"""What the web server refuses before Gradio sees a request, for a page served to a network (`--host 0.0.0.0`).

Gradio limits the size of each uploaded file, but takes up to 1,000 of them in one request, and reads any other
request's body whole into memory: a photo sent inline as a `data:` URL inside the JSON of an API call had no limit,
and four 150 MB bodies took the server to 2.4 GB. Its file routes also fetch web addresses
(`/gradio_api/file=http://...`, and `/gradio_api/file/http://...`), which an offline app must not do; its deep-link
route writes a snapshot of the session to disk, where it stays; and its recording route (unused here: the camera
takes stills) writes to the folder every Gradio app shares and can run ffmpeg.
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

UPLOAD_ROUTE = "/gradio_api/upload"
MAX_UPLOAD_BYTES = MAX_FILE_BYTES + 2**20  # one photo, as the page sends it, and the form around it
MAX_BODY_BYTES = MAX_FILE_BYTES * 4 // 3 + 2**20  # the largest photo SpotCheck takes, base64-encoded, and the JSON
FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/")  # the photo's copies (heatmap, framing view)
FETCHED = ("http:", "https:", "//")  # what follows a file route when Gradio would fetch it from the web
REFUSED_ROUTES = ("/gradio_api/deep_link", "/gradio_api/process_recording")
HEADERS = [(b"x-frame-options", b"DENY")]  # the page is not to be shown inside another site's frame
NO_STORE = (b"cache-control", b"no-store")  # on the photo's copies: kept in no cache


class RequestGuard:
    """ASGI middleware: 413 for a body declared over the route's limit (MAX_UPLOAD_BYTES on the upload route,
    MAX_BODY_BYTES elsewhere), 411 for an upload that does not declare its length (the page and gradio_client always
    do), a streamed body elsewhere cut off past the limit (Gradio answers 400), 403 for a file route given a web
    address and for the REFUSED_ROUTES, HEADERS on every response and NO_STORE on the file routes'."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY_BYTES, max_upload: int = MAX_UPLOAD_BYTES) -> None:
        self.app, self.max_body, self.max_upload = app, max_body, max_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "").lower()
        file_route = next((route for route in FILE_ROUTES if path.startswith(route)), None)
        if path.startswith(REFUSED_ROUTES) or (file_route and path[len(file_route):].startswith(FETCHED)):
            await _refuse(send, 403, b"SpotCheck does not fetch or keep anything at this address.")
            return
        upload = path.rstrip("/") == UPLOAD_ROUTE
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if upload and declared is None:  # streamed: cut off past the limit, Gradio answered 500 and kept the parts
            await _refuse(send, 411, b"An upload must say its length.")
            return
        limit = self.max_upload if upload else self.max_body
        if not (declared or b"0").isdigit() or int(declared or b"0") > limit:
            await _refuse(send, 413, b"The request is too large.")
            return
        receive = _counted(receive, limit)
        extra = [*HEADERS, NO_STORE] if file_route else HEADERS

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
