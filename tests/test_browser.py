"""The web page in a real browser: Debian's Chromium driven by Playwright against `python -m serve.app`.

Screenshots of each state are saved under screenshots/ (git-ignored) for a person to look at.
"""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import pytest

from data.images import MAX_FILE_BYTES
from serve.app import PHOTO_HEIGHT
from serve.guidance import DISCLAIMER, GUIDANCE, HEADLINES, WAITING
from tests.conftest import ROOT, ROTATED_HEIC, free_port, spot_photo, write_rgb

WAITING_TEXT = WAITING.replace("**", "")  # the answer box before an answer, as the page shows it
CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")  # where .ci/run looks for it too
if not CHROMIUM.is_file():
    pytest.skip("browser tests need Debian's Chromium on the PATH (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="browser tests need playwright (pip install -c .ci/constraints.txt -e '.[test]')")

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = ROOT / "screenshots"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
TIMEOUT_MS = 30_000
sync_api.expect.set_options(timeout=TIMEOUT_MS)  # as long as the waits: expect's own 5 s is short on a busy 2-core machine
SHOWN = "(sel) => { const i = document.querySelector(sel); return i && i.complete && i.naturalWidth > 0; }"  # a loaded picture


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Visit:
    """One fresh page of the app, with every request it makes recorded."""

    def __init__(self, browser, url: str, **context):
        self.context = browser.new_context(**({"viewport": {"width": 1280, "height": 900}} | context))
        self.requests: list[str] = []
        self.context.on("request", lambda request: self.requests.append(request.url))
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.goto(url)
        self.page.locator("#disclaimer").wait_for()
        # The photo box is drawn after the page text: tests that drop a file on it must not start before (on a busy
        # machine they did, and found no drop target).
        self.page.locator("#photo button").first.wait_for()

    def upload(self, path: Path) -> None:
        self.page.locator("#photo input[type=file]").set_input_files(str(path))

    def check(self) -> None:
        self.page.locator("#check").click()

    def upload_until_checkable(self, path: Path) -> None:
        """Put in a photo and wait until the page has taken it: the check button, disabled meanwhile, is back. Pressed
        before, on a busy machine, the check had gone out ahead of the photo and been answered at once."""
        self.page.evaluate("""() => {
            const button = document.querySelector('#check');
            window.checkable = false;
            new MutationObserver((records) => {
                if (records.some((record) => record.oldValue !== null) && !button.disabled) window.checkable = true;
            }).observe(button, {attributes: true, attributeFilter: ['disabled'], attributeOldValue: true});
        }""")
        self.upload(path)
        self.page.wait_for_function("() => window.checkable")

    def answer_photo(self, path: Path) -> str:
        """Put in a photo, wait until the page has taken it and shows it, press the button and wait for its answer."""
        self.upload_until_checkable(path)
        self.page.locator("#photo img").wait_for()
        self.check()
        return self.wait_for_answer(*HEADLINES.values())

    def check_and_wait(self) -> str:
        """Press the button and wait until the answer has been redrawn, even if it reads the same as before."""
        self.page.evaluate("""() => {
            const tracker = document.querySelector('#answer [data-testid=status-tracker]');
            window.answered = false;
            let pending = false;
            new MutationObserver(() => {
                if (!tracker.classList.contains('hide')) pending = true;
                else if (pending) window.answered = true;
            }).observe(tracker, {attributes: true});
        }""")
        self.check()
        self.page.wait_for_function("() => window.answered")
        return self.answer()

    def answer(self) -> str:
        return self.page.locator("#answer").inner_text()

    def wait_for_answer(self, *texts: str) -> str:
        try:
            self.page.wait_for_function(
                "([texts]) => texts.some(t => document.querySelector('#answer').innerText.includes(t))",
                arg=[list(texts)])
        except sync_api.TimeoutError:  # say what the page showed instead: a rare failure must be readable from CI
            shown = self.page.locator("#answer").inner_text(timeout=1000)  # (not another 30 s if the page is gone)
            button = "disabled" if self.page.locator("#check").is_disabled(timeout=1000) else "enabled"
            pytest.fail(f"no answer reading any of {texts} after {TIMEOUT_MS // 1000} s: the answer box says "
                        f"{shown!r}, the check button is {button}")
        return self.answer()

    def screenshot(self, name: str) -> Path:
        self.page.evaluate("document.fonts.ready.then(() => true)")
        SCREENSHOTS.mkdir(exist_ok=True)
        path = SCREENSHOTS / name
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path

    def assert_no_error_shown(self) -> None:
        """No stack trace anywhere, and none of Gradio's bare "Error" badges on the outputs."""
        body = self.page.locator("body").inner_text()
        for sign in ("Traceback", 'File "', "Exception", "ComponentProcessingError"):
            assert sign not in body, f"{sign!r} on the page:\n{body[:2000]}"
        for output in ("#answer", "#confidence", "#heatmap", "#guidance"):
            assert "Error" not in self.page.locator(output).inner_text(), f"an error is shown in {output}"

    def assert_only_local_requests(self) -> None:
        assert self.requests, "no requests were recorded"
        outside = [url for url in self.requests
                   if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url).hostname not in LOCAL_HOSTS]
        assert not outside, f"the page fetched from outside this machine: {outside}"

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser, running_app):
    visit = Visit(browser, running_app.url)
    yield visit
    visit.close()


def headline_in(text: str) -> str | None:
    return next((headline for headline in HEADLINES.values() if headline in text), None)


def headline_label(text: str) -> str | None:
    return next((label for label, headline in HEADLINES.items() if headline in text), None)


def test_the_page_loads_offline_with_the_disclaimer(visit):
    page = visit.page
    assert page.title() == "SpotCheck"
    page.locator("#photo").get_by_text("Click to Upload").wait_for()  # the page has been drawn
    page.locator("#check").wait_for(state="visible")
    disclaimer = page.locator("#disclaimer")
    assert disclaimer.is_visible()
    assert disclaimer.inner_text().strip() == DISCLAIMER.replace("**", "")  # the whole text, as plain words
    assert page.locator("#check").is_visible() and page.locator("#photo input[type=file]").count() == 1
    sync_api.expect(page.get_by_role("button", name="Move frame left", include_hidden=True)).to_be_disabled()
    for empty in ("#confidence", "#heatmap", "#framing-panel"):  # hidden until there is something to show
        sync_api.expect(page.locator(empty)).to_be_hidden()
    # A screen reader announces each answer; the button's white label is readable (5.2:1; Gradio's orange: 2.8:1).
    assert page.get_attribute("#answer", "aria-live") == "polite"
    assert page.get_attribute("#answer [data-testid=status-tracker]", "aria-hidden") == "true"  # not its ticking
    assert page.locator("#answer").inner_text().strip() == WAITING_TEXT  # not a blank box
    assert page.eval_on_selector("#check", "e => getComputedStyle(e).backgroundColor") == "rgb(194, 65, 12)"
    visit.screenshot("01_loaded.png")
    visit.assert_only_local_requests()


def test_a_photo_gets_an_answer_heatmap_and_guidance(visit, tmp_path):
    page = visit.page
    answer = visit.answer_photo(write_rgb(tmp_path / "spot.png", spot_photo("nevus", size=200)))
    label = headline_label(answer)
    # The photo box has one height whatever the photo's shape (a portrait photo had pushed the button off screen).
    assert page.locator("#photo").bounding_box()["height"] == pytest.approx(PHOTO_HEIGHT, abs=1)
    assert label and "Why:" in answer
    assert page.get_attribute("#answer", "aria-live") == "polite"  # still a live region, now it holds an answer
    assert page.get_attribute("#answer [data-testid=status-tracker]", "aria-hidden") == "true"

    # The heatmap is shown (a loaded picture, served by the app itself) ...
    heatmap = page.locator("#heatmap img")
    heatmap.wait_for()
    page.wait_for_function(SHOWN, arg="#heatmap img")
    assert urlsplit(heatmap.get_attribute("src")).hostname in LOCAL_HOSTS
    # ... with the confidence chart, the guidance for that answer, and the disclaimer still on screen.
    assert "%" in page.locator("#confidence").inner_text()
    sync_api.expect(page.locator("#confidence")).to_be_visible()
    # No title lies over what it names (they had covered the top 26 px of the pictures and, on a phone, of the
    # confidence panel's big answer).
    page.locator("#framing img").wait_for()
    for part in ("#confidence", "#heatmap", "#framing"):
        title = page.locator(f"{part} [data-testid=block-label]").first.bounding_box()
        shown = page.locator(f"{part} img, {part} .output-class").first.bounding_box()
        assert title["y"] + title["height"] <= shown["y"] + 1, f"{part}'s title covers its top"
    picture = heatmap.bounding_box()  # nor do the heatmap's fullscreen and download buttons cover its corner
    for name in ("Fullscreen", "Download"):
        box = page.locator(f"#heatmap button[aria-label={name}]").bounding_box()
        assert box["y"] + box["height"] <= picture["y"] + 1, f"the {name} button covers the heatmap"
    sync_api.expect(heatmap).to_be_visible()
    assert headline_label(page.locator("#answer h2").inner_text()) == label  # the page's headings go h1, h2
    first_paragraph = GUIDANCE[label].split("\n\n")[0]
    sync_api.expect(page.locator("#guidance")).to_contain_text(first_paragraph[:60])
    assert page.locator("#guidance").is_visible() and page.locator("#disclaimer").is_visible()
    visit.assert_no_error_shown()
    visit.screenshot("02_answer.png")

    # The frame that was checked is drawn on the photo; a click there moves it and checks again.
    framing = page.locator("#framing img")
    framing.wait_for()
    first_view = framing.get_attribute("src")
    framing.click(position={"x": 12, "y": 12})
    assert "Why:" in visit.wait_for_answer("the frame you placed")
    # The moved frame is drawn (the last step after a click) before the slider is touched: drawn later, it would
    # reset the slider to the frame's size (a slow machine showed that race).
    sync_api.expect(framing).not_to_have_attribute("src", first_view)
    # The slider resizes the frame around the same place: the framing view is drawn anew.
    size = page.locator("#frame-size input[type=range]")
    sync_api.expect(size).to_be_enabled()
    moved_view = framing.get_attribute("src")
    size.fill("90")
    size.dispatch_event("pointerup")
    sync_api.expect(framing).not_to_have_attribute("src", moved_view)
    sync_api.expect(size).to_have_value("90")
    # The arrow keys resize it too, for people using a keyboard: checked again when the key is let go.
    keyed_view = framing.get_attribute("src")
    size.focus()
    scrolled = page.evaluate("window.scrollY")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    sync_api.expect(framing).not_to_have_attribute("src", keyed_view)
    sync_api.expect(size).to_have_value("88")
    page.wait_for_timeout(500)  # a scroll, if any, has started; side by side the view stays by the slider
    assert page.evaluate("window.scrollY") == scrolled
    # So does a size typed into its number box, on Enter (it was checked only when the box was left).
    typed_view = framing.get_attribute("src")
    number = page.locator("#frame-size input[type=number]")
    number.fill("60")
    number.press("Enter")
    sync_api.expect(framing).not_to_have_attribute("src", typed_view)
    sync_api.expect(size).to_have_value("60")
    # A keyboard moves the frame with its buttons, where a pointer taps: Tab to one, Enter.
    before_move = framing.get_attribute("src")
    page.get_by_role("button", name="Move frame right").focus()
    page.keyboard.press("Enter")
    sync_api.expect(framing).not_to_have_attribute("src", before_move)
    assert "the frame you placed" in visit.answer()
    # Walked to the photo's right edge, the button greys out; the keyboard focus goes to another move button
    # (the browser had dropped it to the page).
    right = page.get_by_role("button", name="Move frame right")
    for _ in range(8):
        if right.is_disabled():
            break
        right.focus()
        before_move = framing.get_attribute("src")
        page.keyboard.press("Enter")
        sync_api.expect(framing).not_to_have_attribute("src", before_move)
        page.wait_for_timeout(300)
    sync_api.expect(right).to_be_disabled()
    page.wait_for_function("() => document.activeElement.closest('#framing-panel button:not([disabled])')")
    # Side by side the answer may be far above: its headline is said again under the buttons, in sight.
    note = page.locator("#frame-note")
    sync_api.expect(note).to_contain_text(f"Answer for this frame: {headline_in(visit.answer())}")
    # The framing controls stay where they are on the screen while the answer above them grows or shrinks (the
    # confidence panel shown or hidden, a longer reason): they had jumped under the pointer, on a desktop off the
    # screen.
    left = page.get_by_role("button", name="Move frame left")
    page.evaluate("window.scrollTo(0, 0)")  # in sight at the top of the page, where the browser's own scroll
    page.wait_for_timeout(300)  # anchoring does not keep them
    under = note.bounding_box()
    page.set_viewport_size({"width": 1280, "height": round(under["y"] + under["height"]) + 60})  # the note in sight
    page.wait_for_timeout(300)
    top = left.bounding_box()["y"]
    assert page.evaluate("window.scrollY") == 0
    before_move = framing.get_attribute("src")
    left.click()
    sync_api.expect(framing).not_to_have_attribute("src", before_move)
    page.wait_for_timeout(300)
    assert abs(left.bounding_box()["y"] - top) < 2
    page.evaluate("document.querySelector('#answer').insertAdjacentHTML('beforeend', "
                  "'<div id=\"taller\" style=\"height: 300px\"></div>')")
    page.wait_for_timeout(300)
    assert abs(left.bounding_box()["y"] - top) < 2, "the move buttons jumped when the answer above grew"
    page.evaluate("document.querySelector('#taller').remove()")
    page.set_viewport_size({"width": 1280, "height": 900})
    # A tap on the framing view low on the screen: the note under the buttons, which says the new answer, is brought
    # into sight (kept in place, the page had left it below the screen), and the place tapped stays in sight.
    page.evaluate("window.scrollBy(0, document.querySelector('#framing img').getBoundingClientRect().top - 700)")
    page.wait_for_timeout(300)
    before_tap = framing.get_attribute("src")
    framing.click(position={"x": 40, "y": 40})
    sync_api.expect(framing).not_to_have_attribute("src", before_tap)
    page.wait_for_timeout(300)
    assert page.evaluate("document.querySelector('#frame-note').getBoundingClientRect().bottom") <= 900
    assert page.evaluate("document.querySelector('#framing img').getBoundingClientRect().top") + 40 > 0
    # Every picture says in words what it shows.
    for picture in ("#photo img", "#heatmap img", "#framing img"):
        assert page.locator(picture).get_attribute("alt"), f"{picture} has no alt text"
    visit.assert_no_error_shown()
    visit.screenshot("02b_frame_moved.png")

    # Pressing the button again: the upload was deleted once answered; the photo held in memory is checked again.
    again = visit.check_and_wait()
    assert headline_label(again) and "the frame you placed" in again
    visit.assert_no_error_shown()
    visit.assert_only_local_requests()


def test_an_iphone_heic_or_a_tiff_photo_is_taken_shown_and_checked(visit, tmp_path, running_app):
    """Chromium on Linux leaves "IMG_0001.HEIC" untyped, which Gradio refused, and shows neither HEIC nor TIFF: the
    photo box takes them, dropped or picked, shows an upright copy the browser can, and that copy is checked."""
    page = visit.page

    def put_in(name: str, data: bytes, how: str) -> None:
        if how == "picked":
            (tmp_path / name).write_bytes(data)
            visit.upload(tmp_path / name)
        else:  # as a file manager drops it: a file without a type
            page.evaluate("""([name, bytes]) => {
                const transfer = new DataTransfer();
                transfer.items.add(new File([new Uint8Array(bytes)], name, {type: ''}));
                document.querySelector('#photo button').dispatchEvent(
                    new DragEvent('drop', {bubbles: true, cancelable: true, dataTransfer: transfer})); }""",
                          [name, list(data)])

    tiff = cv2.imencode(".tif", spot_photo("nevus", size=200))[1].tobytes()
    for name, data, how, upright in (("IMG_0001.HEIC", ROTATED_HEIC, "dropped", (48, 64)),
                                     ("IMG_0002.HEIC", ROTATED_HEIC, "picked", (48, 64)),
                                     ("spot.tif", tiff, "picked", (200, 200))):
        before = page.evaluate("() => document.querySelector('#photo img')?.src")
        put_in(name, data, how)
        page.wait_for_function(f"(before) => document.querySelector('#photo img')?.src !== before && ({SHOWN})('#photo img')",
                               arg=before)
        shown = page.evaluate("() => { const i = document.querySelector('#photo img'); "
                              "return [i.naturalWidth, i.naturalHeight]; }")
        assert tuple(shown) == upright, f"{name} ({how}) is shown {shown[0]} x {shown[1]}"
        answer = visit.check_and_wait()
        assert headline_label(answer) and "Why:" in answer, f"{name} ({how}): {answer}"
        visit.assert_no_error_shown()
    visit.screenshot("03a_tiff.png")
    assert not any(running_app.uploads.rglob("*.HEIC")), "a HEIC upload was kept"


def test_a_file_that_is_not_a_photo_gets_a_friendly_message(visit, tmp_path, running_app):
    page = visit.page
    visit.answer_photo(write_rgb(tmp_path / "spot.png", spot_photo("nevus", size=200)))

    # A text file named .jpg passes the browser's image/* filter and reaches the app.
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is a text file, not a photo")
    visit.upload(fake)
    # Answered as it is put in, in place of the previous answer: it had shown as a broken picture until Check.
    message = visit.wait_for_answer("cannot be used")
    assert "Please upload a photo" in message
    assert not headline_label(message)
    page.locator("#photo img").wait_for(state="detached")  # the photo box is emptied for the next try
    sync_api.expect(page.locator("#check")).to_be_enabled()
    assert page.locator("#heatmap img").count() == 0
    for empty in ("#confidence", "#heatmap"):  # no empty boxes beside "this file cannot be used"
        sync_api.expect(page.locator(empty)).to_be_hidden()
    visit.assert_no_error_shown()
    visit.screenshot("03_bad_file.png")
    assert "Traceback" not in running_app.log.read_text(errors="replace"), running_app.log_tail()

    # A file that is not an image by name is refused by the page itself, with a message saying why.
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo either")
    visit.upload(notes)
    toast = page.get_by_test_id("toast-text")
    sync_api.expect(toast).to_contain_text("notes.txt")
    page.wait_for_function("() => getComputedStyle(document.querySelector('[data-testid=toast-body]')).opacity === '1'")
    visit.screenshot("04_text_file.png")  # before the message fades away (after 10 s)
    assert "image" in toast.inner_text()
    visit.assert_no_error_shown()
    visit.assert_only_local_requests()


def test_a_file_over_the_size_limit_does_not_leave_the_previous_answer(visit, tmp_path):
    """Gradio refuses it in the browser, with a pop-up that fades, and empties the photo box without an event that
    clears the answer: the previous photo's answer had stayed beside the empty box."""
    page = visit.page
    visit.answer_photo(write_rgb(tmp_path / "spot.png", spot_photo("nevus", size=200)))
    huge = tmp_path / "huge.png"
    huge.write_bytes(os.urandom(MAX_FILE_BYTES + 2**20))
    visit.upload(huge)
    assert "Upload or take a photo" in visit.wait_for_answer("Upload or take a photo")
    page.locator("#framing img").wait_for(state="detached")  # drawn after the answer
    assert page.locator("#heatmap img").count() == 0
    assert headline_label(visit.answer_photo(write_rgb(tmp_path / "next.png", spot_photo("vascular", size=200))))
    visit.assert_no_error_shown()


class SlowPredictor:
    """The real predictor, slowed down so that a person can put in another photo while one is checked."""

    def __init__(self, predictor, seconds: float):
        self.predictor, self.seconds = predictor, seconds
        self.answered = threading.Event()

    def __getattr__(self, name: str):  # everything but `predict` (e.g. its framing setting) as the real one has it
        return getattr(self.predictor, name)

    def predict(self, *args, **kwargs):
        time.sleep(self.seconds)
        try:
            return self.predictor.predict(*args, **kwargs)
        finally:
            self.answered.set()


def test_a_photo_replaced_while_being_checked_does_not_get_the_old_answer(browser, predictor, tmp_path):
    from serve.app import build_app

    slow = SlowPredictor(predictor, seconds=2)
    app = build_app(slow)
    app.queue().launch(server_port=free_port(), prevent_thread_lock=True, quiet=True)
    visit = Visit(browser, app.local_url)
    try:
        page = visit.page
        visit.upload_until_checkable(write_rgb(tmp_path / "red.png", spot_photo("vascular", size=200)))
        visit.check()
        page.locator("#answer [data-testid=status-tracker]:not(.hide)").wait_for()  # being checked
        first_photo = page.locator("#photo img").get_attribute("src")
        visit.upload(write_rgb(tmp_path / "brown.png", spot_photo("nevus", size=200)))
        sync_api.expect(page.locator("#photo img")).not_to_have_attribute("src", first_photo)
        assert slow.answered.wait(30), "the first photo was never answered"
        page.locator("#answer [data-testid=status-tracker].hide").wait_for(state="attached")
        page.wait_for_timeout(1000)  # the answer's follow-up steps (the framing view) have run
        assert visit.answer().strip() == WAITING_TEXT, "the first photo's answer is shown next to the second"
        assert page.locator("#framing img").count() == 0 and page.locator("#heatmap img").count() == 0
        assert page.locator("#photo img").count() == 1  # the new photo stays, ready to be checked

        slow.seconds = 0
        visit.check()
        assert headline_label(visit.wait_for_answer(*HEADLINES.values()))
        visit.assert_no_error_shown()

        # The same while a moved frame is being checked.
        slow.seconds, slow.answered = 2, threading.Event()
        page.locator("#framing img").click(position={"x": 12, "y": 12})
        page.locator("#answer [data-testid=status-tracker]:not(.hide)").wait_for()
        visit.upload(write_rgb(tmp_path / "third.png", spot_photo("other", size=200)))
        page.wait_for_function("(text) => document.querySelector('#answer').innerText.trim() === text",
                               arg=WAITING_TEXT)
        assert slow.answered.wait(30), "the moved frame was never answered"
        page.locator("#answer [data-testid=status-tracker].hide").wait_for(state="attached")
        page.wait_for_timeout(1000)
        assert visit.answer().strip() == WAITING_TEXT, "the moved frame's answer is shown next to the third"
        assert page.locator("#framing img").count() == 0 and page.locator("#heatmap img").count() == 0

        # The new photo's button pressed while the old photo is still being checked: answered after it, not dropped
        # (Gradio drops a press while the event it starts is still running, and the page had said "The answer
        # appears here ..." for good).
        slow.seconds, slow.answered = 6, threading.Event()
        visit.check()  # the third photo
        page.locator("#answer [data-testid=status-tracker]:not(.hide)").wait_for()
        page.evaluate("""() => {  // the page holds the button while it takes a new photo: note when it does
            const button = document.querySelector('#check');
            window.held = false;
            new MutationObserver(() => { if (button.disabled) window.held = true; }).observe(button, {attributes: true});
        }""")
        visit.upload(write_rgb(tmp_path / "fourth.png", spot_photo("nevus", size=200, seed=4)))
        page.wait_for_function("() => window.held")  # the page has taken the new photo ...
        sync_api.expect(page.locator("#check")).to_be_enabled()  # ... and given the button back for it
        assert not slow.answered.is_set(), "the third photo was answered before the test could press again"
        visit.check()  # while the third is still being checked
        assert slow.answered.wait(30), "the third photo was never answered"
        assert headline_label(visit.wait_for_answer(*HEADLINES.values())), "the fourth photo was never answered"
        visit.assert_no_error_shown()
    finally:
        visit.close()
        app.close()


def test_the_page_works_on_a_phone(browser, running_app, tmp_path):
    """A phone-sized touch screen: everything fits the width, and the photo button can take a picture."""
    phone = Visit(browser, running_app.url, viewport={"width": 390, "height": 844}, device_scale_factor=2,
                  is_mobile=True, has_touch=True,
                  user_agent="Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
                             "Chrome/130.0 Mobile Safari/537.36")
    try:
        page = phone.page
        page.locator("#photo").get_by_text("Click to Upload").wait_for()
        # An image file input: phone browsers offer the camera or the photo library for it.
        assert "image" in page.locator("#photo input[type=file]").get_attribute("accept")
        # (waiting for the photo to be shown was not enough: in CI a tap went out ahead of it, answered "add a photo")
        phone.upload_until_checkable(write_rgb(tmp_path / "spot.png", spot_photo("nevus", size=300, radius=30)))
        page.locator("#photo img").wait_for()
        page.locator("#check").tap()
        answer = phone.wait_for_answer(*HEADLINES.values())
        assert headline_label(answer) and "Why:" in answer
        assert page.locator("#disclaimer").is_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
        phone.assert_no_error_shown()
        phone.screenshot("05_phone.png")
        # A tap on the framing view, far below the answer: the page stays by the frame, so that a finger can nudge it
        # again, and the new answer's headline is said under the buttons, in sight (the answer is a screen above).
        framing = page.locator("#framing img")
        framing.wait_for()  # the framing panel is shown after the answer, and then the page scrolls to the answer
        # (smoothly, and on a busy machine late): scrolled to the framing view until the answer stays out of sight.
        page.wait_for_function("""() => new Promise((settled) => {
            document.querySelector('#framing img').scrollIntoView();
            setTimeout(() => settled(document.querySelector('#answer').getBoundingClientRect().top < -50), 700);
        })""")
        box, view = framing.bounding_box(), framing.get_attribute("src")
        framing.tap(position={"x": box["width"] / 2, "y": box["height"] / 2})
        sync_api.expect(framing).not_to_have_attribute("src", view)  # checked again, and drawn
        assert "the frame you placed" in phone.answer()
        note = page.locator("#frame-note")
        assert headline_in(phone.answer()) in note.inner_text()
        page.wait_for_timeout(1000)  # a scroll, if any, has happened
        assert page.evaluate("document.querySelector('#answer').getBoundingClientRect().top") < -50  # not jumped up
        assert page.evaluate("document.querySelector('#frame-note').getBoundingClientRect().bottom") <= 844  # in sight
        phone.assert_only_local_requests()
    finally:
        phone.close()
