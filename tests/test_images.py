"""Every kind of file a user might send reads as RGB uint8, or fails with a clear ImageError."""
from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

import data.images
from data.images import (PNG_SIGNATURE, ImageError, ImageTooLarge, NotAPhoto, decode_image, is_image_file,
                         read_image)
from data.quality import photo_problem
from tests.conftest import ROOT, ROTATED_HEIC


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


def rotated_blue(fmt: str, **options) -> bytes:
    """A 40 x 20 blue image saved as `fmt` with EXIF orientation 6 ("rotate 90 CW to display")."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), (0, 0, 255)).save(buffer, fmt, exif=exif.tobytes(), **options)
    return buffer.getvalue()


def test_exif_orientation_is_applied():
    assert decode_image(rotated_blue("JPEG")).shape[:2] == (40, 20)  # portrait after rotation


@pytest.mark.parametrize("data,message", [
    (b"", "empty"),
    (b"this is a text file, not a photo", "not a readable image"),
    (png_bytes(np.zeros((50, 50, 3), np.uint8))[:60], "not a readable image"),  # truncated
], ids=["empty", "text", "truncated"])
def test_bad_bytes_raise_clear_errors(data, message):
    with pytest.raises(ImageError, match=message):
        decode_image(data)


def textured_jpeg(mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(0)
    picture = cv2.GaussianBlur((rng.random((120, 160, 3)) * 255).astype(np.uint8), (9, 9), 3)
    buffer = io.BytesIO()
    Image.fromarray(picture).convert(mode).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "CMYK"])
def test_a_jpeg_with_damaged_picture_data_is_refused(mode):
    whole = textured_jpeg(mode)
    damaged = whole[: len(whole) // 2] + b"\xff\xd9"  # half the picture data lost, the end marker put back
    assert cv2.imdecode(np.frombuffer(damaged, np.uint8), cv2.IMREAD_COLOR) is not None  # OpenCV fills in the rest
    with pytest.raises(ImageError, match="damaged"):
        decode_image(damaged)
    assert decode_image(whole).shape == (120, 160, 3)


def test_a_jpeg_with_extraneous_bytes_before_its_end_marker_is_read():
    """Some cameras write a few stray bytes there; libjpeg warns, but the picture is whole."""
    whole = textured_jpeg()
    assert decode_image(whole[:-2] + b"\x00\x00\x00\xff\xd9").shape == (120, 160, 3)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ImageError, match="cannot open"):
        read_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_image(tmp_path / "empty.jpg")


def png_header_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height pixels (its pixel data is a few bytes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("width, height", [(9_000, 8_000), (50_000, 50_000)])
def test_decompression_bomb_is_refused_from_its_header(tmp_path, width, height):
    """Refused as too large, whatever imported OpenCV first (the app and batch scoring import it before
    data.images; OpenCV's own limit, about 1 gigapixel, is set when it is first imported)."""
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_claiming(width, height))
    script = ("import sys, cv2\nfrom data.images import ImageError, read_image\n"
              "try:\n    read_image(sys.argv[1])\nexcept ImageError as err:\n    print(err)\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}  # OpenCV's default limit
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, cwd=ROOT,
                            env=env, timeout=60)
    assert "too large (more than 64 megapixels)" in result.stdout, result.stdout + result.stderr


def test_formats_whose_size_pillow_cannot_read_are_refused():
    """OpenCV alone decodes a few formats whose header Pillow cannot read (here Radiance HDR): their pixel count is
    unknown before decoding, and a 24-MB HDR file claiming 20,000 x 20,000 pixels took 6 GB, so they are refused."""
    hdr = cv2.imencode(".hdr", np.ones((64, 64, 3), np.float32))[1].tobytes()
    assert cv2.imdecode(np.frombuffer(hdr, np.uint8), cv2.IMREAD_COLOR) is not None  # a valid image for OpenCV
    with pytest.raises(ImageError, match="not a readable image"):
        decode_image(hdr)


def pillow_tiff(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "TIFF")
    return buffer.getvalue()


MEASURED = np.linspace(0, 1000, 48 * 64).reshape(48, 64)


@pytest.mark.parametrize("tiff, samples", [
    (pillow_tiff(MEASURED.astype(np.float32)), "floating-point"),  # Pillow reads its header, OpenCV no pixels
    (cv2.imencode(".tiff", np.dstack([MEASURED] * 3).astype(np.float32))[1].tobytes(), "floating-point"),  # neither
    (pillow_tiff(MEASURED.astype(np.int32)), "32-bit integer"),
], ids=["grey float32", "RGB float32", "grey int32"])
def test_a_tiff_of_measurements_is_refused_saying_what_to_export(tiff, samples):
    """It had been refused as "not a readable image (corrupt, truncated or unsupported format)", and the web page
    then asked for a photo in one of its formats, TIFF among them."""
    with pytest.raises(NotAPhoto, match=f"^the file is a {samples} TIFF .*: export it as an 8-bit JPEG or PNG$"):
        decode_image(tiff)
    with pytest.raises(ImageError, match="not a readable image"):  # its directory lost: no more to say
        decode_image(tiff[:8] + bytes(len(tiff) - 8))


def test_tiff_photos_of_8_and_16_bits_are_read():
    bgr = np.full((48, 64, 3), (40, 30, 200), np.uint8)
    for photo in (bgr, bgr.astype(np.uint16) * 257):
        assert tuple(decode_image(cv2.imencode(".tiff", photo)[1].tobytes())[0, 0]) == (200, 30, 40)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def with_chunk_before_pixels(png: bytes, chunks: bytes) -> bytes:
    at = png.index(b"IDAT") - 4
    return png[:at] + chunks + png[at:]


def test_a_png_with_over_a_megabyte_of_packed_metadata_is_read():
    """Photo editors can write XMP that unpacks to megabytes; Pillow refuses such a PNG's header (1 MB text limit),
    which must not make a good photo "corrupt"."""
    red = np.full((40, 60, 3), (40, 30, 200), np.uint8)  # BGR
    xmp = b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + zlib.compress(b" " * 1_100_000)
    rgb = decode_image(with_chunk_before_pixels(png_bytes(red), png_chunk(b"iTXt", xmp)))
    assert rgb.shape == (40, 60, 3) and tuple(rgb[0, 0]) == (200, 30, 40)


def png_of(samples: np.ndarray, colour_type: int, transparent: tuple[int, ...] = ()) -> bytes:
    """A PNG of `samples` (uint8 or uint16, (H, W) grey or (H, W, channels)) as they are, and a transparent colour
    (a tRNS chunk) if given, written by hand: OpenCV writes no tRNS chunk, and Pillow no 16-bit colour."""
    height, width = samples.shape[:2]
    rows = samples.astype(samples.dtype.newbyteorder(">")).reshape(height, -1)  # PNG's samples are big-endian
    pixels = b"".join(b"\x00" + row.tobytes() for row in rows)  # each row unfiltered (filter type 0)
    header = struct.pack(">IIBBBBB", width, height, samples.dtype.itemsize * 8, colour_type, 0, 0, 0)
    trns = png_chunk(b"tRNS", struct.pack(f">{len(transparent)}H", *transparent)) if transparent else b""
    return (PNG_SIGNATURE + png_chunk(b"IHDR", header) + trns + png_chunk(b"IDAT", zlib.compress(pixels))
            + png_chunk(b"IEND", b""))


GREY_16 = np.array([[0x12FF, 0x80FF, 0xFE01, 0x5678]] * 2, np.uint16)  # high bytes 18, 128, 254, 86
ALPHA_16 = np.array([[0xFFFF, 0x80FF, 0x00FF, 0x0000]] * 2, np.uint16)  # high bytes 255, 128, 0, 0
RGB_16 = np.stack([GREY_16, np.full_like(GREY_16, 0x4000), np.full_like(GREY_16, 0xC0C0)], axis=-1)  # G 64, B 192
WHITE = (255, 255, 255)


@pytest.mark.parametrize("png, row", [
    (png_of(GREY_16, 0, (0x5678,)), [(18,) * 3, (128,) * 3, (254,) * 3, WHITE]),
    (png_of(RGB_16, 2, (0x5678, 0x4000, 0xC0C0)), [(18, 64, 192), (128, 64, 192), (254, 64, 192), WHITE]),
    (png_of(np.stack([GREY_16, ALPHA_16], axis=-1), 4), [(18,) * 3, (191,) * 3, WHITE, WHITE]),
    (png_of(np.dstack([RGB_16, ALPHA_16]), 6), [(18, 64, 192), (191, 159, 223), WHITE, WHITE]),
    (png_of((GREY_16 >> 8).astype(np.uint8), 0, (86,)), [(18,) * 3, (128,) * 3, (254,) * 3, WHITE]),
    (png_of((RGB_16 >> 8).astype(np.uint8), 2, (86, 64, 192)), [(18, 64, 192), (128, 64, 192), (254, 64, 192), WHITE]),
], ids=["grey 16-bit, one level transparent", "RGB 16-bit, one colour transparent", "grey+alpha 16-bit",
        "RGBA 16-bit", "grey 8-bit, one level transparent", "RGB 8-bit, one colour transparent"])
def test_a_transparent_png_of_16_bits_reads_as_its_high_bytes_on_white(png, row):
    """A 16-bit sample reads as its high byte, as in a PNG without transparency (OpenCV's). A 16-bit grey PNG with
    a transparent level had come out white; a 16-bit colour one kept its transparent colour. (Half see-through:
    128 over white gives 191; 64 and 192, 159 and 223.)"""
    rgb = decode_image(png)
    assert rgb.shape == (2, 4, 3)
    assert [tuple(pixel) for pixel in rgb[0]] == row and (rgb[1] == rgb[0]).all()


def test_a_16_bit_grey_photo_with_a_transparent_level_is_judged_black_and_white():
    """It had come out white, and been refused as "overexposed": the reason given must be the true one."""
    levels = np.random.default_rng(0).integers(20_000, 45_000, (96, 128), dtype=np.uint16)
    levels[:4] = 0  # a transparent strip along the top
    rgb = decode_image(png_of(levels, 0, (0,)))
    assert (rgb[:4] == 255).all()
    np.testing.assert_array_equal(rgb[4:], np.repeat(levels[4:, :, None] >> 8, 3, axis=2))
    assert photo_problem(rgb).startswith("black and white")


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "RGBA rotated"])
def test_a_transparent_png_with_over_a_megabyte_of_packed_metadata_reads_as_without_it(mode):
    """Such a PNG had been read with its transparent parts black ("too dark"); a grey one with a transparent colour,
    or one turned by its EXIF orientation, must not come out otherwise either: the same pixels read the same."""
    rgba = np.zeros((20, 40, 4), np.uint8)  # transparent black, the left half opaque red
    rgba[:, :20] = (200, 30, 40, 255)
    picture = Image.fromarray(rgba, "RGBA")
    buffer = io.BytesIO()
    if mode in ("P", "L"):  # one transparent colour (a tRNS chunk): a palette's, or a grey level
        converted = picture.convert("RGB").quantize(2) if mode == "P" else picture.convert("L")
        converted.save(buffer, "PNG", transparency=int(np.asarray(converted)[0, 39]))
    elif mode == "RGBA rotated":
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to display
        picture.save(buffer, "PNG", exif=exif.tobytes())
    else:
        picture.convert(mode).save(buffer, "PNG")
    plain = buffer.getvalue()
    xmp = b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + zlib.compress(b" " * 1_100_000)
    with_xmp = decode_image(with_chunk_before_pixels(plain, png_chunk(b"iTXt", xmp)))
    np.testing.assert_array_equal(with_xmp, decode_image(plain))
    assert tuple(with_xmp[-1, -1 if mode == "RGBA rotated" else 39]) == (255, 255, 255)
    assert with_xmp.shape == ((40, 20, 3) if mode == "RGBA rotated" else (20, 40, 3))


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_a_file_padded_with_empty_metadata_blocks_is_refused_at_once(fmt):
    """Pillow walks and keeps every block before the picture: 12 million empty ones took 24 s and 1.7 GB."""
    photo = np.full((64, 64, 3), (40, 30, 200), np.uint8)
    if fmt == "jpeg":
        jpeg = cv2.imencode(".jpg", photo)[1].tobytes()
        few, padded = (jpeg[:2] + b"\xff\xe1\x00\x02" * n + jpeg[2:] for n in (20, 12 * 2**20))
    else:
        few, padded = (with_chunk_before_pixels(png_bytes(photo), png_chunk(b"zzZz", b"") * n) for n in (20, 4 * 2**20))
    assert decode_image(few).shape == (64, 64, 3)  # a few dozen blocks are what photos carry
    with pytest.raises(ImageError, match="too much metadata"):
        decode_image(padded)


def test_images_just_under_the_pixel_limit_are_read():
    rgb = decode_image(cv2.imencode(".png", np.zeros((6_000, 10_000, 3), np.uint8))[1].tobytes())
    assert rgb.shape == (6_000, 10_000, 3)


def test_a_pipe_named_like_a_photo_is_not_read(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(ImageError, match="not a regular file"):
        read_image(tmp_path / "pipe.jpg")


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


def test_an_iphone_heic_photo_is_read_upright(tmp_path):
    """HEIC (iPhones' own format) is decoded by libheif, which applies the file's rotation once: not twice, with
    the EXIF tag that says the same."""
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(ROTATED_HEIC)
    rgb = read_image(path)
    assert rgb.shape == (64, 48, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb[4:28].astype(int) - (200, 30, 40)).max() < 12  # red on top
    assert np.abs(rgb[36:60].astype(int) - (225, 180, 160)).max() < 12  # skin below
    assert is_image_file(path) and is_image_file("a.heif") and is_image_file("b.avif") and is_image_file("web.JFIF")
    for damaged in (ROTATED_HEIC[:400], ROTATED_HEIC[:492] + bytes(177) + ROTATED_HEIC[669:]):  # cut off; or a
        with pytest.raises(ImageError, match="not a readable image"):  # readable header with its picture zeroed
            decode_image(damaged)


def test_a_heic_that_crashes_the_decoder_is_an_error_not_a_crash(tmp_path, monkeypatch):
    """Its metadata item's type "Exif" changed to "Exi\\xff": pi-heif 1.4 dies of a segmentation fault reading it.
    The decoding runs in a process of its own, so this process lives on and says why."""
    crashing = ROTATED_HEIC[:179] + b"\xff" + ROTATED_HEIC[180:]
    with pytest.raises(ImageError, match="not a readable image"):
        decode_image(crashing)
    assert decode_image(ROTATED_HEIC).shape == (64, 48, 3)  # and the next photo is read as before
    # Whatever the installed pi-heif does with that file, a decoder killed by a signal reads the same way.
    segfaulting = tmp_path / "worker.py"
    segfaulting.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    monkeypatch.setattr(data.images, "HEIC_WORKER", segfaulting)
    with pytest.raises(ImageError, match="the HEIC decoder failed"):
        decode_image(ROTATED_HEIC)


def test_a_heic_over_the_pixel_limit_is_refused(monkeypatch):
    monkeypatch.setattr(data.images, "MAX_PIXELS", 3000)  # the fixture has 64 x 48 = 3,072 pixels
    with pytest.raises(ImageTooLarge, match="too large"):  # as any other photo over the limit: "a smaller copy"
        decode_image(ROTATED_HEIC)


def test_an_avif_photo_is_read_upright():
    rgb = decode_image(rotated_blue("AVIF", quality=90))
    assert rgb.shape == (40, 20, 3) and rgb[10, 10, 2] > 200 and rgb[10, 10, 0] < 40


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_transparent_parts_become_white_as_the_page_shows_them(fmt):
    """OpenCV drops the alpha and keeps the colour under it (often black): a cut-out spot then read as too dark."""
    rgba = np.zeros((20, 40, 4), np.uint8)  # transparent black
    rgba[:, 20:] = (200, 30, 40, 255)  # an opaque red right half
    rgba[:, 10:20] = (200, 30, 40, 128)  # half see-through
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, fmt, lossless=True)
    rgb = decode_image(buffer.getvalue())
    assert rgb.shape == (20, 40, 3)
    assert tuple(rgb[0, 0]) == (255, 255, 255) and tuple(rgb[0, 30]) == (200, 30, 40)
    assert 220 <= rgb[0, 15, 0] <= 235 and 135 <= rgb[0, 15, 1] <= 150  # half way to white


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_a_transparent_picture_is_laid_on_white_a_band_at_a_time_and_upright(monkeypatch, mode):
    """Every pixel as Pillow's alpha_composite over white gives it (rounded to the nearest), across bands of rows
    (here 2 rows of the turned picture at a time, the last band 1 row), with the EXIF orientation applied."""
    monkeypatch.setattr(data.images, "BAND_PIXELS", 10)  # the picture is 5 pixels wide once turned
    rgba = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    rgba[0, 0] = (200, 30, 40, 128)  # half see-through red
    picture = Image.fromarray(rgba, "RGBA").convert(mode)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    picture.save(buffer, "PNG", exif=exif.tobytes())
    rgb = decode_image(buffer.getvalue())
    pixels = np.asarray(picture).astype(float)
    colour, alpha = pixels[..., :-1], pixels[..., -1:]
    on_white = np.broadcast_to(np.round(colour * alpha / 255 + 255 * (1 - alpha / 255)), (5, 7, 3))
    np.testing.assert_array_equal(rgb, np.rot90(on_white, -1))  # turned clockwise
    if mode == "RGBA":
        assert tuple(rgb[0, -1]) == (227, 142, 147)  # the top left corner, turned to the top right


def test_a_palette_picture_with_a_transparent_colour_and_a_rotated_one_with_alpha():
    palette = Image.new("P", (10, 8), 0)
    palette.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    palette.paste(1, (5, 0, 10, 8))
    buffer = io.BytesIO()
    palette.save(buffer, "PNG", transparency=0)
    rgb = decode_image(buffer.getvalue())
    assert tuple(rgb[0, 0]) == (255, 255, 255) and tuple(rgb[0, 9]) == (200, 30, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    Image.new("RGBA", (40, 20), (0, 0, 255, 255)).save(buffer, "PNG", exif=exif.tobytes())
    assert decode_image(buffer.getvalue()).shape == (40, 20, 3)


def test_every_photo_suffix_is_typed_for_the_browser_as_its_format():
    """The page types an untyped file by its suffix (serve/scripts.py); a .jfif is a JPEG, not "image/jfif"."""
    from serve.scripts import PHOTO_TYPES

    assert PHOTO_TYPES[".jfif"] == PHOTO_TYPES[".jpe"] == PHOTO_TYPES[".jpg"] == "image/jpeg"
    assert PHOTO_TYPES[".tif"] == "image/tiff" and PHOTO_TYPES[".heic"] == "image/heic"
