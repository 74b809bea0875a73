"""serve.guard: what the web server refuses before Gradio reads a request."""
from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from data.images import MAX_FILE_BYTES
from serve.guard import MAX_BODY_BYTES, BodyTooLarge, RequestGuard


async def echo_size(request):
    return PlainTextResponse(str(len(await request.body())))


@pytest.fixture
def web():
    app = Starlette(routes=[Route("/{path:path}", echo_size, methods=["GET", "POST"])],
                    middleware=[Middleware(RequestGuard, max_body=1000, max_upload=3000)])
    return TestClient(app, raise_server_exceptions=True)


def test_a_body_over_the_limit_is_refused_and_an_upload_holds_one_photo(web):
    assert web.post("/gradio_api/queue/join", content=b"x" * 1000).text == "1000"
    assert web.post("/gradio_api/queue/join", content=b"x" * 1001).status_code == 413
    assert web.post("/gradio_api/upload", content=b"x" * 3000).text == "3000"  # one photo and its form
    assert web.post("/gradio_api/upload?upload_id=abc", content=b"x" * 3001).status_code == 413  # not 1,000 of them


def chunks(n: int):
    for _ in range(n):
        yield b"x" * 100


def test_a_streamed_body_that_runs_past_the_limit_is_cut_off(web):
    assert web.post("/gradio_api/queue/join", content=chunks(10)).text == "1000"
    with pytest.raises(BodyTooLarge):
        web.post("/gradio_api/queue/join", content=chunks(20))


def test_an_upload_that_does_not_say_its_length_is_refused(web):
    """Cut off past the limit, Gradio's upload answered 500 and kept the parts it had written."""
    assert web.post("/gradio_api/upload", content=chunks(2)).status_code == 411


def test_fetching_web_addresses_and_deep_links_are_refused(web):
    for path in ("/gradio_api/file=http://example.org/a.png", "/gradio_api/file=HTTPS://example.org/a.png",
                 "/gradio_api/file=//example.org/a.png", "/gradio_api/file/http://example.org/a.png",
                 "/gradio_api/deep_link", "/gradio_api/process_recording"):
        assert web.get(path).status_code == 403, path
    for path in ("/gradio_api/file=/tmp/gradio/abc/heatmap.png", "/gradio_api/file/tmp/gradio/abc/http.png"):
        assert web.get(path).status_code == 200, path


def test_no_framing_and_no_caching_of_the_photos_copies(web):
    page = web.get("/")
    assert page.headers["x-frame-options"] == "DENY" and "cache-control" not in page.headers
    for picture in (web.get("/gradio_api/file=/tmp/gradio/abc/heatmap.png"), web.get("/gradio_api/file/tmp/a/b.png")):
        assert picture.headers["x-frame-options"] == "DENY" and picture.headers["cache-control"] == "no-store"


def test_the_limit_takes_the_largest_photo_sent_inline():
    assert MAX_BODY_BYTES > 4 * MAX_FILE_BYTES // 3  # base64 makes 4 bytes of 3
