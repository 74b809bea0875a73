"""The app's API, as a program uses it: gradio_client against `python -m serve.app`, and no outbound traffic."""
from __future__ import annotations

import base64
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from serve.guidance import DISCLAIMER, GUIDANCE, HEADLINES
from tests.conftest import ROTATED_HEIC, free_port, serve_app, spot_photo, write_rgb

gradio_client = pytest.importorskip(
    "gradio_client", reason="gradio_client is not installed (pip install -c .ci/constraints.txt -e '.[test]')")


def headline_in(summary: str) -> str | None:
    return next((label for label, headline in HEADLINES.items() if headline in summary), None)


def new_client(running_app, downloads: Path) -> gradio_client.Client:
    return gradio_client.Client(running_app.url, verbose=False, download_files=str(downloads),
                                analytics_enabled=False)


@pytest.fixture(scope="module")
def client(running_app, tmp_path_factory):
    return new_client(running_app, tmp_path_factory.mktemp("client_downloads"))


def check_as_someone_else(running_app, downloads: Path, photo: Path) -> str:
    """One request from its own client, as from another person's browser. (One gradio_client.Client shared by
    many threads can itself drop a finished answer: it once raised CancelledError for a job whose result had
    arrived.)"""
    return new_client(running_app, downloads).predict(gradio_client.handle_file(str(photo)), api_name="/check")[0]


def test_check_answers_a_photo_and_keeps_no_upload(client, running_app, tmp_path):
    photo = write_rgb(tmp_path / "spot.png", spot_photo("nevus", size=200))
    summary, confidences, heatmap, guidance = client.predict(gradio_client.handle_file(str(photo)), api_name="/check")

    assert headline_in(summary), summary
    assert "Why:" in summary
    assert {c["label"] for c in confidences["confidences"]} == {"vascular", "nevus", "other"}
    assert confidences["label"] == headline_in(summary)  # the decision (vascular | nevus | other | unsure)
    assert Path(heatmap).is_file() and Path(heatmap).stat().st_size > 0 and Path(heatmap).suffix == ".png"
    assert guidance == GUIDANCE[headline_in(summary)]  # the guidance for this answer
    # The upload itself is gone from the server once answered (only Gradio's heatmap copies remain).
    assert not list(running_app.uploads.rglob("spot.png")), "the uploaded photo was kept on the server"


def test_a_bare_path_to_another_file_on_the_server_is_neither_read_nor_deleted(running_app, tmp_path):
    """The API takes a file as a bare {"path": ...}, which Gradio checks only when its file metadata is sent: the
    app itself must refuse a path outside its upload folder (it deletes each upload once answered)."""
    secret = write_rgb(tmp_path / "someone_elses.png", spot_photo("vascular", size=200))
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"{running_app.url}gradio_api/call/check", method="POST",
                                     data=json.dumps({"data": [{"path": str(secret)}]}).encode(),
                                     headers={"Content-Type": "application/json"})
    with no_proxy.open(request, timeout=30) as response:
        event = json.loads(response.read())["event_id"]
    with no_proxy.open(f"{running_app.url}gradio_api/call/check/{event}", timeout=60) as response:
        stream = response.read().decode()
    assert "event: complete" in stream and "Upload or take a photo of the spot first" in stream, stream
    assert secret.is_file(), "the app deleted a file outside its upload folder"


def call_check(running_app, photo: dict) -> str:
    """One /check call with a raw file payload, as a program other than gradio_client may send it; the event stream."""
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"{running_app.url}gradio_api/call/check", method="POST",
                                     data=json.dumps({"data": [photo]}).encode(),
                                     headers={"Content-Type": "application/json"})
    with no_proxy.open(request, timeout=30) as response:
        event = json.loads(response.read())["event_id"]
    with no_proxy.open(f"{running_app.url}gradio_api/call/check/{event}", timeout=60) as response:
        return response.read().decode()


def data_url(data: bytes) -> dict:
    return {"url": "data:image/png;base64," + base64.b64encode(data).decode(), "meta": {"_type": "gradio.FileData"}}


def test_a_photo_sent_inline_as_a_data_url_goes_through_spotchecks_own_checks(client, running_app, tmp_path):
    """Gradio decoded such a photo itself before the app saw it: a 164 KB PNG of 13,000 x 13,000 px took 2 GB of
    memory, and bytes that are no image got "something went wrong"."""
    photo = write_rgb(tmp_path / "spot.png", spot_photo("nevus", size=200))
    as_file = client.predict(gradio_client.handle_file(str(photo)), api_name="/check")[0]
    inline = call_check(running_app, data_url(photo.read_bytes()))
    assert "event: complete" in inline and json.dumps(as_file)[1:-1] in inline  # the same answer, word for word

    bomb = cv2.imencode(".png", np.zeros((13_000, 13_000), np.uint8))[1].tobytes()
    assert "too large" in call_check(running_app, data_url(bomb))
    assert "This file cannot be used" in call_check(running_app, data_url(b"definitely not a photo"))
    assert not list(running_app.uploads.rglob("inline-*")), "a photo sent inline was kept on the server"


def test_a_non_image_gets_a_message_not_an_error(client, tmp_path):
    fake = tmp_path / "notes.jpg"
    fake.write_text("definitely not a photo")
    summary, confidences, heatmap, guidance = client.predict(gradio_client.handle_file(str(fake)), api_name="/check")
    assert "cannot be used" in summary and "Please upload a photo" in summary
    assert not confidences and heatmap is None and guidance == DISCLAIMER  # no page around an API reply


def test_a_photo_it_cannot_judge_gets_the_decision_without_bars(client, tmp_path):
    """A photo unlike the ones the model learned from: `unsure`, and no probabilities that would read as an answer."""
    photo = write_rgb(tmp_path / "red.png", spot_photo("vascular", size=200))  # synthetic: unlike them
    summary, confidences, heatmap, guidance = client.predict(gradio_client.handle_file(str(photo)), api_name="/check")
    assert headline_in(summary) == "unsure" and "does not look like the skin spots" in summary
    assert confidences["label"] == "unsure" and not confidences.get("confidences")


def test_an_iphone_heic_photo_gets_an_answer(client, running_app, tmp_path):
    photo = tmp_path / "IMG_0001.HEIC"
    photo.write_bytes(ROTATED_HEIC)
    summary, confidences, heatmap, guidance = client.predict(gradio_client.handle_file(str(photo)), api_name="/check")
    assert headline_in(summary) == confidences["label"] and Path(heatmap).is_file()
    assert not list(running_app.uploads.rglob("IMG_0001.HEIC"))


def test_50_concurrent_requests_mixing_photos_and_bad_files_all_get_an_answer(running_app, tmp_path):
    # Different photos, as from different people (for the same photo sent many times at once, see below),
    # and every fifth request a file that is not an image.
    files = []
    for i in range(50):
        if i % 5 == 4:
            bad = tmp_path / f"bad_{i}.jpg"
            bad.write_bytes(b"not an image %d" % i)
            files.append(bad)
        else:
            label = ("vascular", "nevus", "other")[i % 3]
            files.append(write_rgb(tmp_path / f"spot_{i}.png", spot_photo(label, size=160, seed=i)))

    with ThreadPoolExecutor(max_workers=50) as pool:
        summaries = list(pool.map(lambda path: check_as_someone_else(running_app, tmp_path, path), files))
    for path, summary in zip(files, summaries):
        if path.name.startswith("bad"):
            assert "cannot be used" in summary, summary
        else:
            assert headline_in(summary), summary
    assert running_app.process.poll() is None  # still up


def test_a_100_mb_upload_is_refused_and_the_app_stays_up(client, running_app):
    import httpx

    body = b"\xff\xd8" + b"\0" * (100 * 2**20)
    response = httpx.post(running_app.url + "gradio_api/upload", files={"files": ("big.jpg", body, "image/jpeg")},
                          timeout=60, trust_env=False)
    assert response.status_code == 413 and "too large" in response.text  # serve.guard: over one photo's size
    assert running_app.process.poll() is None
    from data.images import MAX_FILE_BYTES  # the largest photo the page takes still goes through, with its form

    response = httpx.post(running_app.url + "gradio_api/upload", timeout=60, trust_env=False,
                          files={"files": ("largest.jpg", b"\xff\xd8" + bytes(MAX_FILE_BYTES - 2), "image/jpeg")})
    assert response.status_code == 200


def test_the_same_photo_sent_at_once_never_errors(running_app, tmp_path):
    """Gradio stores uploads by content: the same file sent by several requests at once is one file on the
    server, and the first answer deletes it. The others must then say so plainly (never an error or a crash)."""
    photo = write_rgb(tmp_path / "same.png", spot_photo("nevus", size=160, seed=7))
    with ThreadPoolExecutor(max_workers=8) as pool:
        summaries = list(pool.map(lambda _: check_as_someone_else(running_app, tmp_path, photo), range(8)))
    assert any(headline_in(s) for s in summaries)
    odd = [s for s in summaries if not headline_in(s) and "upload the photo again" not in s]
    assert not odd, odd[:3]


def is_loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:  # a host name: it would need a DNS lookup, which is outbound too
        return False


def test_no_outbound_connection_while_serving_and_predicting(monkeypatch, predictor, tmp_path):
    """The whole app in this process (build, launch, upload, queue, predict, answer) with every
    non-loopback connect() refused and recorded."""
    attempts = []
    real_connect, real_connect_ex, real_getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def guard(real):
        def connect(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address):
                attempts.append(address)
                raise OSError(f"test: outbound connection to {address} refused")
            return real(sock, address)
        return connect

    def getaddrinfo(host, *args, **kwargs):  # a DNS lookup of a host name is outbound too
        if not is_loopback(str(host)) and str(host) not in ("", "0.0.0.0"):
            attempts.append(host)
            raise OSError(f"test: lookup of {host} refused")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guard(real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guard(real_connect_ex))
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    # Whatever switched analytics off for the rest of the suite (serve.app's import does, for this process) must
    # not hide a change that stops the app from switching them off itself.
    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)
    # The test's own client (gradio_client, through huggingface_hub) looks up huggingface.co unless offline: that
    # is the test's scaffolding; the app itself makes no such lookup (the guard covers it too).
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)

    from serve.app import build_app  # built and launched below with the guard in place

    app = build_app(predictor)
    app.queue(default_concurrency_limit=2).launch(server_name="127.0.0.1", server_port=free_port(),
                                                  prevent_thread_lock=True, share=False, quiet=True)
    try:
        client = gradio_client.Client(app.local_url, verbose=False, download_files=str(tmp_path / "downloads"),
                                       analytics_enabled=False)
        photo = write_rgb(tmp_path / "spot.png", spot_photo("nevus", size=200))
        summary = client.predict(gradio_client.handle_file(str(photo)), api_name="/check")[0]
        assert headline_in(summary), summary
        # A web address in place of a file, which Gradio would download before the app sees it, is refused.
        for url in ("https://example.com/spot.png", "http://93.184.216.34/spot.png"):
            payload = {"path": url, "url": url, "meta": {"_type": "gradio.FileData"}}
            with pytest.raises(gradio_client.exceptions.AppError, match="does not download photos"):
                client.predict(payload, api_name="/check")
    finally:
        app.close()
    assert attempts == [], f"outbound connections attempted: {attempts}"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a test certificate")
def test_the_app_serves_https_so_phones_can_use_the_live_camera(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    with serve_app(tmp_path, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)) as app:
        assert app.url.startswith("https://")
        trusting_the_test_certificate = ssl.create_default_context(cafile=str(cert))
        trusting_the_test_certificate.check_hostname = False
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=trusting_the_test_certificate))
        with opener.open(app.url, timeout=10) as page:
            assert page.status == 200 and b"SpotCheck" in page.read()


def test_a_request_body_over_the_limit_is_refused_before_it_is_read(client, running_app):
    """Gradio limits uploaded files, but read any other body whole: an inline photo of 200 MB in an API call's JSON
    had taken the server's memory from 0.3 to 1.2 GB."""
    import httpx

    from serve.guard import MAX_BODY_BYTES

    body = b'{"data": [{"url": "data:image/png;base64,' + b"A" * MAX_BODY_BYTES + b'"}], "fn_index": 0}'
    response = httpx.post(running_app.url + "gradio_api/queue/join", content=body, timeout=60, trust_env=False,
                          headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert running_app.process.poll() is None


def test_routes_that_fetch_or_keep_things_are_closed_and_the_page_cannot_be_framed(running_app):
    import httpx

    web = httpx.Client(trust_env=False, timeout=10)
    for path in ("gradio_api/file=http://93.184.215.14/index.html", "gradio_api/file=HTTPS://example.org/x.png",
                 "gradio_api/file/http://93.184.215.14/index.html", "gradio_api/deep_link?session_hash=abc"):
        response = web.get(running_app.url + path)  # refused before Gradio, which fetched such addresses
        assert response.status_code == 403 and "SpotCheck does not fetch" in response.text, path
    for path in ("monitoring", "monitoring/summary"):
        assert web.get(running_app.url + path).status_code in (403, 404), path  # Gradio: monitoring is off
    page = web.get(running_app.url)
    assert page.status_code == 200 and page.headers["x-frame-options"] == "DENY"
    assert '"run_history":false' in web.get(running_app.url + "config").text.replace(" ", "")


def test_uploads_go_to_a_folder_of_the_servers_own_removed_when_it_is_killed(tmp_path):
    """Without GRADIO_TEMP_DIR Gradio kept uploads in /tmp/gradio, shared by every Gradio app, where an upload cut
    off midway stayed for good; and a SIGTERM (systemd, docker stop) left every copy of a photo on disk."""
    import httpx

    with serve_app(tmp_path, own_upload_folder=True) as app:
        photo = write_rgb(tmp_path / "spot.png", spot_photo("nevus", size=64))
        response = httpx.post(app.url + "gradio_api/upload", trust_env=False, timeout=30,
                              files={"files": ("spot.png", photo.read_bytes(), "image/png")})
        uploaded = Path(response.json()[0])
        folder = next(app.uploads.glob("spotcheck-uploads-*"))
        assert uploaded.is_file() and uploaded.is_relative_to(folder)
        assert folder.stat().st_mode & 0o077 == 0  # the server's user's alone
    assert app.process.returncode is not None and not folder.exists()  # stopped by SIGTERM, and cleaned up


def test_a_second_kill_while_the_server_closes_is_taken_as_the_first(tmp_path):
    """A second Ctrl+C or `kill` while Gradio closed the server had stopped the closing with a KeyboardInterrupt
    traceback (exit 130): two `kill`s (`timeout` and `pkill` together) or an impatient second Ctrl+C."""
    with serve_app(tmp_path, own_upload_folder=True) as app:
        folder = next(app.uploads.glob("spotcheck-uploads-*"))
        for _ in range(20):  # the first one, then more while it closes
            app.process.terminate()
            time.sleep(0.02)
        app.process.wait(timeout=30)
        log = app.log_tail()
    assert app.process.returncode == 0, log
    assert "Traceback" not in log and log.count("stopping: closing the server") == 1, log
    assert not folder.exists()
