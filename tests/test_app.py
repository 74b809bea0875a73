"""The web page's logic, without a browser: answers, friendly errors, uploads not kept."""
from __future__ import annotations

from serve.app import build_app, check_spot
from serve.guidance import DISCLAIMER, GUIDANCE, HEADLINES
from tests.conftest import spot_photo, write_rgb


def test_a_photo_gets_an_answer_and_the_upload_is_deleted(tmp_path, predictor):
    upload = write_rgb(tmp_path / "upload.png", spot_photo("vascular", size=200))
    answer = check_spot(predictor, str(upload))
    assert any(headline in answer.summary for headline in HEADLINES.values())
    assert "Why:" in answer.summary
    assert set(answer.probabilities) == {"vascular", "nevus", "other"}
    assert answer.heatmap is not None and answer.heatmap.shape[2] == 3
    assert answer.guidance in GUIDANCE.values()
    assert not upload.exists()


def test_a_bad_file_gets_a_message_not_a_crash(tmp_path, predictor):
    upload = tmp_path / "upload.jpg"
    upload.write_text("definitely not a photo")
    answer = check_spot(predictor, str(upload))
    assert "cannot be used" in answer.summary and answer.probabilities == {}
    assert not upload.exists()
    assert "first" in check_spot(predictor, None).summary


def test_guidance_is_complete_and_careful():
    assert set(GUIDANCE) == set(HEADLINES) == {"vascular", "nevus", "other", "unsure"}
    assert "not a diagnosis" in DISCLAIMER
    assert "blanch" in GUIDANCE["vascular"].lower() and "ABCDE" in GUIDANCE["nevus"]
    assert "doctor" in GUIDANCE["other"] and "doctor" in GUIDANCE["unsure"]
    for text in GUIDANCE.values():
        assert "vitamin" not in text.lower() and "liver" not in text.lower()


def test_the_page_builds_with_the_disclaimer(predictor):
    app = build_app(predictor)
    config = app.get_config_file()
    texts = [c.get("props", {}).get("value") for c in config["components"]]
    assert DISCLAIMER in texts
