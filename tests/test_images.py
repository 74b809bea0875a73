"""Every kind of file a user might send reads as RGB uint8, or fails with a clear ImageError."""
from __future__ import annotations

import io
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from data.images import ImageError, decode_image, read_image


def png_bytes(array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


def test_colour_jpeg_reads_as_rgb(tmp_path):
    bgr = np.zeros((20, 30, 3), np.uint8)
    bgr[..., 2] = 255  # pure red in OpenCV's BGR order
    path = tmp_path / "red.png"
    cv2.imwrite(str(path), bgr)
    rgb = read_image(path)
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (255, 0, 0)


@pytest.mark.parametrize("array", [
    np.full((12, 16), 128, np.uint8),  # grayscale
    np.full((12, 16, 4), 200, np.uint8),  # RGBA
    np.full((12, 16, 3), 40000, np.uint16),  # 16-bit
], ids=["gray", "rgba", "16bit"])
def test_unusual_pixel_formats_become_rgb8(array):
    rgb = decode_image(png_bytes(array))
    assert rgb.shape == (12, 16, 3) and rgb.dtype == np.uint8


def test_sixteen_bit_is_scaled_not_clipped():
    rgb = decode_image(png_bytes(np.full((4, 4, 3), 32768, np.uint16)))
    assert 120 <= rgb[0, 0, 0] <= 135


def test_palette_and_cmyk_images(tmp_path):
    palette = io.BytesIO()
    Image.new("RGB", (10, 8), (255, 0, 0)).convert("P").save(palette, "PNG")
    assert decode_image(palette.getvalue()).shape == (8, 10, 3)
    cmyk = io.BytesIO()
    Image.new("CMYK", (10, 8), (0, 255, 255, 0)).save(cmyk, "JPEG")
    assert decode_image(cmyk.getvalue()).shape == (8, 10, 3)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    assert decode_image(buffer.getvalue()).shape[:2] == (40, 20)  # portrait after rotation


@pytest.mark.parametrize("data,message", [
    (b"", "empty"),
    (b"this is a text file, not a photo", "not a readable image"),
    (png_bytes(np.zeros((50, 50, 3), np.uint8))[:60], "not a readable image"),  # truncated
], ids=["empty", "text", "truncated"])
def test_bad_bytes_raise_clear_errors(data, message):
    with pytest.raises(ImageError, match=message):
        decode_image(data)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ImageError, match="cannot open"):
        read_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_image(tmp_path / "empty.jpg")


def test_decompression_bomb_is_refused_fast():
    """A valid PNG header claiming 50,000 x 50,000 pixels must be refused before allocation."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0))
    body = chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b"")
    start = time.perf_counter()
    with pytest.raises(ImageError):
        decode_image(b"\x89PNG\r\n\x1a\n" + header + body)
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_images_give_their_first_frame(fmt):
    frames = [Image.new("RGB", (40, 30), colour) for colour in [(255, 0, 0), (0, 255, 0)]]
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    rgb = decode_image(buffer.getvalue())
    assert rgb.shape == (30, 40, 3) and rgb[0, 0, 0] > 200 and rgb[0, 0, 1] < 50


def test_oversized_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.jpg"
    with path.open("wb") as f:
        f.truncate(60 * 2**20)  # sparse: 60 MB on paper, nothing on disk
    with pytest.raises(ImageError, match="too large"):
        read_image(path)
