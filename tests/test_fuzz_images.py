"""Property test: whatever bytes arrive, decoding returns RGB uint8 or raises ImageError, nothing else."""
from __future__ import annotations

import cv2
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data.images import ImageError, decode_image
from tests.conftest import ROTATED_HEIC

SEED_IMAGE = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8))[1].tobytes()
SEED_JPEG = cv2.imencode(".jpg", np.random.default_rng(1).integers(0, 255, (24, 32, 3), dtype=np.uint8))[1].tobytes()


def check(data: bytes) -> None:
    try:
        rgb = decode_image(data)
    except ImageError:
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes(data):
    check(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([SEED_IMAGE, SEED_JPEG]), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                           max_size=8), st.integers(0, 10_000))
def test_mutated_real_images(seed, flips, cut):
    data = bytearray(seed)
    for position, value in flips:
        data[position % len(data)] = value
    check(bytes(data[: max(1, cut % (len(data) + 1))]))


@settings(max_examples=25, deadline=None)  # each HEIC is decoded in a process of its own: about 0.3 s apiece
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8), st.integers(0, 10_000))
def test_mutated_heic_photos(flips, cut):
    data = bytearray(ROTATED_HEIC)
    for position, value in flips:
        data[position % len(data)] = value
    check(bytes(data[: max(1, cut % (len(data) + 1))]))
