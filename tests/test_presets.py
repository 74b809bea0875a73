"""The eval and training presets: colour constancy, the shortcut marks and zooming out."""
from __future__ import annotations

import numpy as np

import pytest

from data.augment import MARKS, add_marks, clinicalize, random_colour, random_geometry, zoom_out
from data.presets import EvalSettings, TrainPreset, eval_preset, normalize_as, shades_of_grey, square_resize


def skin_with_spot(cast=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Even skin with a red spot in the middle, under light of colour `cast` (per-channel gains)."""
    image = np.empty((64, 64, 3), np.float32)
    image[:] = (200, 160, 140)
    yy, xx = np.mgrid[:64, :64]
    image[(yy - 32) ** 2 + (xx - 32) ** 2 < 100] = (170, 40, 50)
    return np.clip(image * np.asarray(cast, np.float32), 0, 255).astype(np.uint8)


def test_colour_constancy_undoes_a_colour_cast():
    neutral, warm = skin_with_spot(), skin_with_spot(cast=(1.15, 1.0, 0.8))
    plain, constant = EvalSettings(), EvalSettings(colour_constancy=6)
    plain_gap = np.abs(normalize_as(neutral, plain) - normalize_as(warm, plain)).max()
    constant_gap = np.abs(normalize_as(neutral, constant) - normalize_as(warm, constant)).max()
    assert plain_gap > 0.4 and constant_gap < 0.05


def test_colour_constancy_keeps_the_spot_redder_than_the_skin():
    out = shades_of_grey(skin_with_spot(cast=(0.8, 1.0, 1.2)), 6)  # cool light
    spot, skin = out[32, 32], out[2, 2]
    assert spot[0] - spot[1] > skin[0] - skin[1] + 50


def test_grey_light_changes_nothing():
    grey = np.full((16, 16, 3), 120, np.uint8)
    assert np.array_equal(shades_of_grey(grey, 6), grey.astype(np.float32))


def test_train_and_eval_presets_apply_it_alike():
    """Both presets end in the same constancy + normalisation: under it the input's mean colour is near grey,
    whatever the light was, in training and at prediction time alike."""
    warm = skin_with_spot(cast=(1.15, 1.0, 0.8))
    x, _, _ = eval_preset(warm, EvalSettings(size=64, colour_constancy=6))
    preset = TrainPreset(settings=EvalSettings(size=64, colour_constancy=6), clinical_p=0.0)
    train_x = preset(warm, np.random.default_rng(0))
    assert train_x.shape == x.shape == (3, 64, 64) and train_x.dtype == x.dtype == np.float32
    plain_x, _, _ = eval_preset(warm, EvalSettings(size=64))
    for preset_x in (x, train_x):
        assert np.ptp(preset_x.mean(axis=(1, 2))) < 0.3 < np.ptp(plain_x.mean(axis=(1, 2)))


@pytest.mark.parametrize("name", list(MARKS))
def test_each_mark_draws_on_the_picture_and_is_reproducible(name):
    image = np.ascontiguousarray(np.repeat(np.repeat(skin_with_spot(), 2, axis=0), 2, axis=1)[:112, :112])
    before = image.copy()
    for seed in range(5):
        marked = MARKS[name](image, np.random.default_rng(seed))
        assert marked.shape == image.shape and marked.dtype == np.uint8
        assert (np.abs(marked.astype(int) - image).sum(axis=2) > 30).sum() >= 15  # a visible mark, not noise
        assert np.array_equal(marked, MARKS[name](image, np.random.default_rng(seed)))
    assert np.array_equal(image, before)  # the input is never drawn on


@pytest.mark.parametrize("name", ["pen circle", "ruler", "caption bar"])
def test_marks_leave_the_spot_itself_alone(name):
    """They go around or beside the spot, as on the clinical photos, never over its middle."""
    image = skin_with_spot()
    for seed in range(20):
        marked = MARKS[name](image, np.random.default_rng(seed))
        assert np.array_equal(marked[28:36, 28:36], image[28:36, 28:36])


def test_marks_are_drawn_on_any_class_in_training():
    """With marks_p = 1 every draw is marked; the same draw without marks is the plain recipe."""
    image = skin_with_spot()
    settings = EvalSettings(size=64)
    marked = TrainPreset(settings=settings, clinical_p=0.0, marks_p=1.0)(image, np.random.default_rng(5), clinical=True)
    plain = TrainPreset(settings=settings, clinical_p=0.0)(image, np.random.default_rng(5), clinical=True)
    assert not np.allclose(marked, plain)
    assert any(not np.array_equal(add_marks(image, np.random.default_rng(s)), image) for s in range(5))


def test_marks_off_replays_the_older_recipe_exactly():
    """marks_p = 0 draws no random number for the marks, so runs of earlier recipes (and the shipped
    weights' history) are reproduced bit for bit."""
    image = skin_with_spot()
    rng = np.random.default_rng(11)
    expected = random_colour(random_geometry(image, rng, 48), rng)
    if rng.random() < 1.0:
        expected = clinicalize(expected, rng)
    got = TrainPreset(settings=EvalSettings(size=48), clinical_p=1.0)(image, np.random.default_rng(11), clinical=True)
    assert np.array_equal(got, normalize_as(expected, EvalSettings(size=48)))


def test_zoom_out_shows_the_spot_smaller_on_skin():
    """The spot shrinks to `scale` of the frame, the new surround is the image's own skin colour (no seam, no
    dark frame), and the input is left as it was."""
    image = skin_with_spot()
    before = image.copy()
    out = zoom_out(image, np.random.default_rng(3), scale=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(image, before)
    red = lambda im: (im[..., 0].astype(int) - im[..., 1] > 80).sum()  # the spot's pixels
    assert 0.15 < red(out) / red(image) < 0.35  # about scale**2 of the area
    corners = np.concatenate([out[:8, :8], out[:8, -8:], out[-8:, :8], out[-8:, -8:]]).reshape(-1, 3)
    assert np.abs(corners.mean(axis=0) - (200, 160, 140)).max() < 15  # skin, the colour of the image's own


def test_zoom_out_ignores_a_dark_vignette_when_picking_the_skin_colour():
    image = skin_with_spot()
    yy, xx = np.mgrid[:64, :64]
    image[(yy - 32) ** 2 + (xx - 32) ** 2 > 31 ** 2] = (10, 10, 10)  # a dermoscope's dark corners
    out = zoom_out(image, np.random.default_rng(0), scale=0.6)
    assert out[:4, :4].mean() > 120  # skin, not black


def test_zoom_out_off_replays_the_older_recipe_exactly():
    """zoom_out_p = 0 draws no random number, like marks_p = 0; at 1 every draw is zoomed out."""
    image, settings = skin_with_spot(), EvalSettings(size=48)
    plain = TrainPreset(settings=settings, clinical_p=0.0)(image, np.random.default_rng(5))
    off, on = (TrainPreset(settings=settings, clinical_p=0.0, zoom_out_p=p) for p in (0.0, 1.0))
    assert np.array_equal(off(image, np.random.default_rng(5)), plain)
    assert not np.allclose(on(image, np.random.default_rng(5)), plain)


def test_a_crop_that_is_not_square_is_cut_to_its_middle_not_squeezed():
    """A box of the whole photo (bench.ablation, bench.zoomed_out) reaches `square_resize` as it is: its short side
    is brought to the size and its middle kept, with the spot's shape unchanged."""
    image = np.zeros((100, 300, 3), np.uint8)
    image[:, :100], image[:, 100:200], image[:, 200:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    assert np.array_equal(np.unique(square_resize(image, 50).reshape(-1, 3), axis=0), [[0, 255, 0]])
    assert np.array_equal(np.unique(square_resize(image.transpose(1, 0, 2), 50).reshape(-1, 3), axis=0), [[0, 255, 0]])


def test_shrinking_averages_fine_detail_rather_than_sampling_it():
    """A frame is shrunk with INTER_AREA, as the training images were: one-pixel stripes (hairs, skin texture) become
    an even grey, not the moire that sampling them (INTER_LINEAR) makes."""
    stripes = np.zeros((300, 300, 3), np.uint8)
    stripes[:, ::2] = 255
    square = square_resize(stripes, 112)
    assert square.shape == (112, 112, 3) and abs(square.mean() - 127.5) < 2 and square.std() < 40


def test_the_input_keeps_each_pixel_at_its_row_column_and_channel():
    """normalize_as makes CHW: x[c, y, x] is pixel (y, x)'s channel c, normalised with that channel's mean and std (a
    network trained on every rotation would hardly notice a transposed input, but its heatmap would)."""
    square = np.random.default_rng(0).integers(0, 256, (6, 4, 3), np.uint8)
    settings = EvalSettings(size=4, mean=(0.1, 0.5, 0.9), std=(0.2, 0.3, 0.4))
    x = normalize_as(square, settings)
    expected = (square / 255.0 - np.array(settings.mean)) / np.array(settings.std)
    assert x.shape == (3, 6, 4) and x.dtype == np.float32
    assert np.allclose(x, expected.transpose(2, 0, 1), atol=1e-5)


def test_a_checkpoint_written_before_a_setting_existed_is_read_with_it_off():
    """Checkpoints from before colour constancy or flattened framing were prepared without them."""
    old = EvalSettings.from_checkpoint({"size": 96, "mean": [0.5] * 3, "std": [0.25] * 3})
    assert old == EvalSettings(size=96)
    settings = EvalSettings(size=64, colour_constancy=6, flatten_lightness=True)
    assert EvalSettings.from_checkpoint(settings.to_checkpoint()) == settings


def test_colour_constancy_keeps_a_bright_photo_within_0_to_255():
    """Under a strong cast the weak channel is raised: near-white glare would go past 255 unless clipped."""
    glare = skin_with_spot(cast=(1.15, 1.0, 0.8))
    glare[:8] = (255, 250, 200)
    out = shades_of_grey(glare, 6)
    assert out.max() == 255 and out.min() >= 0


def test_clinical_photos_are_never_zoomed_out():
    """zoom_out puts a dermoscopic image, which fills its frame, on a wider surround; a clinical photo already shows
    the spot small, so at zoom_out_p = 1 it goes through exactly as without zooming out (no draw either)."""
    image, settings = skin_with_spot(), EvalSettings(size=48)
    plain = TrainPreset(settings=settings, clinical_p=0.0)(image, np.random.default_rng(5), clinical=True)
    zoomed = TrainPreset(settings=settings, clinical_p=0.0, zoom_out_p=1.0)(image, np.random.default_rng(5),
                                                                             clinical=True)
    assert np.array_equal(zoomed, plain)
