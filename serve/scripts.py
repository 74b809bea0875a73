"""The page's own JavaScript, run in the browser (Gradio has no setting for these behaviours), and its style."""
from __future__ import annotations

import json

from data.images import IMAGE_SUFFIXES, MAX_FILE_BYTES

# On a phone the answer comes below the photo: bring it to the top of the screen (on a desktop it is in sight). Only
# an answer (it has a headline): a check whose photo was replaced meanwhile leaves the box saying what to do, and the
# page had scrolled away from the new photo to it.
SHOW_ANSWER = """() => { const answer = document.querySelector('#answer');
    if (!answer.querySelector('h2')) return;
    if (answer.getBoundingClientRect().top > window.innerHeight / 2) answer.scrollIntoView({behavior: 'smooth'}); }"""
# A moved frame's answer is longer or shorter than the one before, and may show or hide the confidence panel: all of
# it above the framing controls, which then jumped up or down under the finger (on a desktop, off the screen). From
# a press on the framing controls until the person scrolls (wheel, finger or keys) or presses elsewhere, the page
# keeps them where they were, scrolled only as far as it takes to bring the note under them into sight.
KEEP_FRAMING_IN_PLACE = """() => {
    let anchor = null;  // where the framing panel's top was on the screen when it was pressed
    let control = null;  // what was pressed in it
    const panel = () => document.querySelector('#framing-panel');
    const scrollKeys = ['ArrowUp', 'ArrowDown', 'ArrowLeft', 'ArrowRight', 'PageUp', 'PageDown', 'Home', 'End'];
    const pressed = (event) => {
        const inside = event.target.closest?.('#framing-panel');
        const scrolls = event.type === 'keydown' && scrollKeys.includes(event.key);
        const held = inside && !(scrolls && !event.target.closest('#frame-size'));  // (the slider's keys move it)
        anchor = held ? inside.getBoundingClientRect().top : null;
        control = held ? event.target : null;
    };
    document.addEventListener('pointerdown', pressed, true);
    document.addEventListener('keydown', pressed, true);
    for (const kind of ['wheel', 'touchmove']) document.addEventListener(kind, (event) => {
        if (!event.target.closest?.('#frame-size')) anchor = null;  // (a finger dragging the slider is no scroll)
    }, true);
    const keep = () => {
        const box = panel()?.getBoundingClientRect();
        if (anchor === null || !box || !box.height) return;  // (hidden: no photo held)
        if (Math.abs(box.top - anchor) >= 1) window.scrollBy(0, box.top - anchor);
        // The note under the buttons says the new answer (the answer itself may be above the screen): brought into
        // sight when it is below it, as far as the control pressed stays in sight.
        const note = document.querySelector('#frame-note')?.getBoundingClientRect();
        const below = note ? note.bottom + 8 - window.innerHeight : 0;
        const room = control.getBoundingClientRect().top - 8;
        if (below > 0 && room > 0) {
            window.scrollBy(0, Math.min(below, room));
            anchor = panel().getBoundingClientRect().top;
        }
    };
    const start = () => new ResizeObserver(keep).observe(document.body);
    if (document.body) start(); else document.addEventListener('DOMContentLoaded', start);
    // An answer as long as the one before changes no size: the new framing view's picture, loaded, says it came.
    document.addEventListener('load', (event) => { if (event.target.closest?.('#framing')) keep(); }, true); }"""
# The frame slider checks again when it is let go (Gradio's `release`): a pointer's, or here a key's, so that
# the arrow keys work for people using a keyboard; its number box, when left, and here also on Enter.
SLIDER_KEYS = """() => {
    const keys = ['ArrowLeft', 'ArrowRight', 'ArrowUp', 'ArrowDown', 'PageUp', 'PageDown', 'Home', 'End'];
    document.addEventListener('keyup', (event) => {
        if (keys.includes(event.key) && event.target.matches('#frame-size input[type=range]'))
            event.target.dispatchEvent(new PointerEvent('pointerup', {bubbles: true}));  // Svelte listens at the root
    });
    document.addEventListener('keydown', (event) => {
        if (event.key === 'Enter' && event.target.matches('#frame-size input[type=number]')) event.target.blur();
    }); }"""
# Gradio's photo box takes only files whose type the browser names "image/...", and browsers name a type from the
# file's suffix as the system knows it: Chromium on Linux types "IMG_0001.heic" but leaves an iPhone's "IMG_0001.HEIC"
# untyped, and Windows without its HEIF extension any HEIC. Such a photo was refused as "Invalid file type". This
# gives each untyped file with a photo suffix its type, when picked (`change`) or dropped, before Gradio looks at it.
PHOTO_TYPES = {suffix: "image/" + {".jpg": "jpeg", ".jfif": "jpeg", ".jpe": "jpeg", ".jif": "jpeg", ".tif": "tiff"}.get(
    suffix, suffix[1:]) for suffix in IMAGE_SUFFIXES}
TYPE_PHOTOS = """() => {
    const types = %s;
    const typed = (files) => {  // a DataTransfer of the files, typed, or null when none needed it
        const suffix = (name) => name.slice(name.lastIndexOf('.')).toLowerCase();
        const untyped = Array.from(files).filter((file) => !file.type && types[suffix(file.name)]);
        if (!untyped.length) return null;
        const transfer = new DataTransfer();
        for (const file of files) transfer.items.add(untyped.includes(file)
            ? new File([file], file.name, {type: types[suffix(file.name)], lastModified: file.lastModified}) : file);
        return transfer;
    };
    document.addEventListener('change', (event) => {
        const transfer = event.target.matches('#photo input[type=file]') && typed(event.target.files);
        if (transfer) event.target.files = transfer.files;
    }, true);
    document.addEventListener('drop', (event) => {  // dropped files cannot be changed: drop the typed ones instead
        const transfer = event.target.closest?.('#photo') && event.dataTransfer && typed(event.dataTransfer.files);
        if (!transfer) return;
        event.preventDefault();
        event.stopPropagation();
        event.target.dispatchEvent(new DragEvent('drop', {bubbles: true, cancelable: true, dataTransfer: transfer}));
    }, true); }""" % json.dumps(PHOTO_TYPES)
# A screen reader announces each new answer: the answer box becomes a polite live region once Gradio has drawn it.
# Gradio's progress text inside it ("processing | 0.4/2.1s", redrawn ten times a second) is hidden from screen
# readers, which had read out every tick.
ANNOUNCE_ANSWER = """() => {
    const mark = () => {
        const answer = document.querySelector('#answer');
        answer?.setAttribute('aria-live', 'polite');
        const progress = answer?.querySelector('[data-testid=status-tracker]');
        progress?.setAttribute('aria-hidden', 'true');
        return Boolean(progress);
    };
    if (mark()) return;
    const watch = new MutationObserver(() => { if (mark()) watch.disconnect(); });
    const start = () => watch.observe(document.body, {childList: true, subtree: true});
    if (document.body) start(); else document.addEventListener('DOMContentLoaded', start);
    }"""
# A file over the size limit: Gradio refuses it in the browser with a pop-up that fades and empties the photo box,
# without any event that clears the answer, so the previous photo's answer had stayed beside the empty box. Once the
# box is empty, this presses the button, whose answer for no photo ("upload or take a photo first") resets the page.
CLEAR_AFTER_REFUSED = """() => {
    const limit = %d;
    const tooLarge = (files) => Array.from(files || []).some((file) => file.size > limit);
    const answerWhenEmptied = () => {
        const started = Date.now();
        const wait = setInterval(() => {
            if (!document.querySelector('#photo img')) {
                clearInterval(wait);
                document.querySelector('#check')?.click();
            } else if (Date.now() - started > 5000) clearInterval(wait);
        }, 100);
    };
    document.addEventListener('change', (event) => {
        if (event.target.matches('#photo input[type=file]') && tooLarge(event.target.files)) answerWhenEmptied();
    }, true);
    document.addEventListener('drop', (event) => {
        if (event.target.closest?.('#photo') && tooLarge(event.dataTransfer?.files)) answerWhenEmptied();
    }, true); }""" % MAX_FILE_BYTES
# A move button is greyed out when the frame reaches that edge of the photo; the browser then drops its keyboard focus
# to the page. It goes to the nearest move button still usable, so that Tab and Enter go on from there.
KEEP_FOCUS_ON_MOVES = """() => {
    let focused = null;  // a move button the keyboard focus is on, or last was
    document.addEventListener('focusin', (event) => { focused = event.target; });
    document.addEventListener('pointerdown', (event) => {  // a press elsewhere (e.g. to select text) is not taken back
        if (!event.target.closest?.('#framing-panel')) focused = null;
    }, true);
    new MutationObserver(() => {
        if (!focused?.disabled || !focused.closest('#framing-panel')) return;
        const usable = Array.from(document.querySelectorAll('#framing-panel button')).filter((b) => !b.disabled);
        const distance = (b) => Math.hypot(b.getBoundingClientRect().x - focused.getBoundingClientRect().x,
                                           b.getBoundingClientRect().y - focused.getBoundingClientRect().y);
        usable.sort((a, b) => distance(a) - distance(b))[0]?.focus({preventScroll: true});
    }).observe(document, {subtree: true, attributes: true, attributeFilter: ['disabled']}); }"""
# In the page's <head>: listening from the start, so a photo dropped the moment the page appears is typed too.
PAGE_SCRIPT = (f"<script>({SLIDER_KEYS})(); ({TYPE_PHOTOS})(); ({ANNOUNCE_ANSWER})(); ({CLEAR_AFTER_REFUSED})(); "
               f"({KEEP_FRAMING_IN_PLACE})(); ({KEEP_FOCUS_ON_MOVES})();</script>")

# Gradio's orange button gives its white label a contrast of 2.8:1; this darker orange gives 5.2:1 (WCAG AA: 4.5),
# and a keyboard user sees where the focus is. The titles of the photo box, the confidence panel and the pictures
# sit above them, not over their top (a phone's two-line title had covered the panel's big answer). The framing
# panel shows only with a photo in it: Gradio ignores a column's visible="hidden" until its first update, so that
# the page opened with an empty framing view and controls.
PAGE_STYLE = """
#check { background: #c2410c; border-color: #c2410c; color: #fff; }
#check:hover { background: #9a3412; border-color: #9a3412; }
#check:focus-visible { outline: 3px solid #1d4ed8; outline-offset: 2px; }
#framing-panel:not(:has(#framing img)) { display: none; }
#photo [data-testid=block-label], #confidence [data-testid=block-label], #heatmap [data-testid=block-label],
#framing [data-testid=block-label] { position: static; }
#heatmap .icon-button-wrapper { top: -26px; }  /* its buttons on the title's row, not over the heatmap's corner */
"""
