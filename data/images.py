"""Reading image files into RGB uint8 arrays, safely.

Every entry point (training, batch scoring, the web app) reads images through
`read_image` / `decode_image`, so a hostile file fails the same way everywhere:
with an `ImageError` whose message a user can act on.
"""
from __future__ import annotations

import io
import os
import stat
import struct
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import simplejpeg
from PIL import Image, ImageOps, TiffImagePlugin

# iPhones save photos as HEIC, which OpenCV cannot read: pi-heif (libheif's decoders only, no GPL encoder) reads
# them, in a process of its own (data/heic_worker.py says why). AVIF Pillow reads itself; everything else OpenCV.
HEIC_WORKER = Path(__file__).with_name("heic_worker.py")
HEIC_SECONDS = 60  # a HEIC photo that takes longer to decode is refused
_HEVC_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}

# A "decompression bomb" (a small file whose header claims, say, 50,000 x 50,000 pixels) is refused from its
# header, before any pixel is allocated. OpenCV has a limit of its own, but reads it once, when it is first
# imported, so it cannot be relied on here; Pillow reads headers without decoding.
MAX_PIXELS = 64_000_000

MAX_FILE_BYTES = 50 * 1024 * 1024
# Metadata blocks before a JPEG's or PNG's picture. Photos carry a few dozen (EXIF, ICC profile, XMP); Pillow keeps
# each one it walks past in memory, and a file padded with millions of empty ones took 24 s and 1.7 GB to open.
MAX_HEADER_BLOCKS = 1000
ANALYSIS_SIDE = 256  # framing and the photo-quality checks measure a copy this size: fast and noise-tolerant
WORKING_SIDE = 4096  # larger photos are checked downscaled to this longer side (12 MP phone photos fit unchanged)
MIN_PHOTO_SIDE = 48  # a photo whose shorter side has fewer pixels is too small to judge (data.quality)
BAND_PIXELS = 2**20  # a transparent picture is laid on white this many pixels at a time (_decode_on_white)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_METADATA = {b"tEXt", b"zTXt", b"iTXt", b"iCCP"}  # chunks Pillow refuses to unpack past 1 MB
UNREADABLE = "the file is not a readable image (corrupt, truncated or unsupported format)"
HEIC_FAILED = "the file is not a readable image (the HEIC decoder failed on it)"
DAMAGED_JPEG = ("the photo file is damaged (part of the picture is missing or garbled, e.g. from an interrupted copy "
                "or download): copy or send the original again")
JPEG_FORMATS = ("JPEG", "MPO")  # Pillow's names (MPO: a JPEG with a second picture, as some cameras write)
# What libjpeg says of a JPEG whose compressed picture data is damaged: it still decodes one, filling in grey or
# garbage, and only prints a warning, so OpenCV hands that picture on. "Extraneous bytes before marker" is left out:
# some cameras write those, and the picture is whole.
_JPEG_DAMAGE = ("Corrupt JPEG data", "Premature end of", "Invalid JPEG file structure", "Bogus")
# .jfif, .jpe and .jif are JPEGs too: Windows names photos saved from a browser or an e-mail .jfif.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jfif", ".jpe", ".jif", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic",
                  ".heif", ".avif")


class ImageError(ValueError):
    """A file that cannot be used as a photo; the message says why."""


class ImageTooLarge(ImageError):
    """A photo over the file-size or pixel limits: a smaller copy of it would do."""


class NotAPhoto(ImageError):
    """An image of measurements, not a photo (e.g. a floating-point TIFF); the message says what to send instead."""


def _too_large(n_bytes: int) -> ImageTooLarge:
    limit = MAX_FILE_BYTES // 2**20
    size = f"{n_bytes / 2**20:.0f} MB" if round(n_bytes / 2**20) > limit else f"just over {limit} MB"  # not "50 MB"
    return ImageTooLarge(f"the file is too large ({size}; the limit is {limit} MB)")


def analysis_copy(image: np.ndarray) -> np.ndarray:
    """The photo resized to ANALYSIS_SIDE pixels on its longer side: what framing and the quality checks look at.

    Made once per photo and handed to both (resizing a 12-megapixel photo takes tens of milliseconds).
    """
    return _longer_side_to(image, ANALYSIS_SIDE)


def working_copy(image: np.ndarray) -> np.ndarray:
    """The photo scaled down to WORKING_SIDE pixels on its longer side (a smaller one as it is), but never so far
    that its shorter side falls under MIN_PHOTO_SIDE (a 6,000 x 60 px strip would have become too small to judge): what is
    framed, checked and cropped. Every way in uses this one copy, so that the web page, which holds it in memory, and
    batch scoring give a 48-megapixel photo the same answer."""
    h, w = image.shape[:2]
    if min(h, w) == 0 or max(h, w) <= WORKING_SIDE:
        return image
    scale = max(WORKING_SIDE / max(h, w), MIN_PHOTO_SIDE / min(h, w))
    if scale >= 1:
        return image
    return cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


def _longer_side_to(image: np.ndarray, side: int) -> np.ndarray:
    """`image` resized to `side` pixels on its longer side, keeping at least one pixel on the shorter."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an RGB uint8 array (H, W, 3), EXIF orientation applied."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as err:
        raise ImageError(f"cannot open the file: {err.strerror or err}") from err
    if not stat.S_ISREG(info.st_mode):  # a folder, a pipe or a device named like a photo
        raise ImageError("not a regular file")
    size = info.st_size
    if size == 0:
        raise ImageError("the file is empty")
    if size > MAX_FILE_BYTES:
        raise _too_large(size)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageError(f"cannot read the file: {err.strerror or err}") from err
    return decode_image(data)


def decode_image(data: bytes) -> np.ndarray:
    """Decode encoded image bytes as an RGB uint8 array (H, W, 3).

    Grayscale, palette, RGBA (transparent parts made white), CMYK and 16-bit
    images are all converted to 8-bit RGB; EXIF orientation is honoured
    (OpenCV applies it when decoding in colour mode, Pillow for pictures with
    transparency).
    """
    if len(data) == 0:
        raise ImageError("the file is empty")
    if len(data) > MAX_FILE_BYTES:
        raise _too_large(len(data))
    if _is_heic(data):
        return _decode_heic(data)
    data, (pixels, image_format, transparent) = _readable(data)
    if pixels is None:  # refused before OpenCV sees it, whose own size limit is about a gigapixel (see MAX_PIXELS)
        raise _unreadable(data)
    _check_pixels(pixels)
    if image_format == "AVIF":
        return _decode_avif(data)
    if transparent:
        return _decode_on_white(data)
    if image_format in JPEG_FORMATS and _jpeg_is_damaged(data):  # its size checked above, as check_jpeg does
        raise ImageError(DAMAGED_JPEG)
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error as err:  # e.g. a header over OpenCV's own pixel limit, in a format Pillow does not read
        raise ImageError("the file is not a readable image (corrupt, too large or unsupported format)") from err
    if bgr is None or bgr.size == 0:
        raise _unreadable(data)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def check_jpeg(data: bytes) -> None:
    """Raise the ImageError `decode_image` raises for a JPEG before decoding its picture: too much metadata, too many
    pixels, or damaged picture data (`_jpeg_is_damaged`); nothing for any other file. A fraction of a decode's cost
    (40-190 ms for a 12-megapixel photo here, baseline or progressive): the web page checks an upload so as soon as it
    is put in, since the browser shows such a JPEG, with a grey or garbled part."""
    data, (pixels, image_format, _) = _readable(data)
    if image_format not in JPEG_FORMATS:
        return
    _check_pixels(pixels)  # before the strict decode, which a crafted header would make large and slow
    if _jpeg_is_damaged(data):
        raise ImageError(DAMAGED_JPEG)


def _check_pixels(pixels: float) -> None:
    if pixels > MAX_PIXELS:
        raise ImageTooLarge(f"the image is too large (more than {MAX_PIXELS // 1_000_000} megapixels)")


def _unreadable(data: bytes) -> ImageError:
    """The error for a file that neither Pillow nor OpenCV decodes: UNREADABLE, or for a TIFF of measurements what it
    is and what to export (it had been "corrupt, truncated or unsupported format", and the page then asked for a
    photo as a JPEG, PNG, ... or TIFF)."""
    samples = _tiff_samples(data)
    if samples is None:
        return ImageError(UNREADABLE)
    return NotAPhoto(f"the file is a {samples} TIFF (scientific image data), not a photo: export it as an 8-bit JPEG "
                     "or PNG")


def _tiff_samples(data: bytes) -> str | None:
    """"floating-point" or, e.g., "32-bit integer" for a TIFF whose first picture holds such samples (a microscope's,
    a thermal or depth camera's, an HDR merge's: neither OpenCV nor Pillow makes a photo of them); None for any other
    file, or a TIFF whose directory cannot be read."""
    try:
        directory = TiffImagePlugin.ImageFileDirectory_v2(data[:8])  # raises for any other file
        stream = io.BytesIO(data)
        stream.seek(directory.next)
        directory.load(stream)
        if 3 in directory.get(TiffImagePlugin.SAMPLEFORMAT, ()):  # 3: IEEE floating point
            return "floating-point"
        bits = max(directory.get(TiffImagePlugin.BITSPERSAMPLE, (0,)))
        return f"{bits}-bit integer" if bits > 16 else None
    except Exception:  # not a TIFF, or its directory is damaged: nothing more to say than UNREADABLE
        return None


def _jpeg_is_damaged(data: bytes) -> bool:
    """Whether libjpeg finds a JPEG's picture data damaged (see _JPEG_DAMAGE).

    A strict decode at an eighth of the size: it reads every bit of the compressed data, where damage shows, and
    costs a fraction of the full decode (about 40%; 70% for a progressive JPEG). Anything else it cannot do (e.g. a
    colour conversion) is OpenCV's to judge. What it cannot see: damage that libjpeg decodes without a complaint
    (compressed data has no checksum), and damage after stray bytes, since the strict decode stops at libjpeg's
    first warning, and stray bytes are let through.
    """
    try:
        colourspace = simplejpeg.decode_jpeg_header(data)[2]
        simplejpeg.decode_jpeg(data, colorspace="CMYK" if colourspace in ("CMYK", "YCCK") else "GRAY",
                               min_factor=8, strict=True)
    except ValueError as err:
        return str(err).startswith(_JPEG_DAMAGE) and "extraneous bytes" not in str(err)
    return False


def image_format(data: bytes) -> str | None:
    """The file's image format as Pillow names it ("JPEG", "PNG", "TIFF", ...; "HEIF" for HEIC), None if unknown."""
    return "HEIF" if _is_heic(data) else _readable(data)[1][1]


def _readable(data: bytes) -> tuple[bytes, tuple[float | None, str | None, bool]]:
    """`data` and its `_header`; for a PNG whose header Pillow refuses, the same PNG without its metadata
    (`_without_png_metadata`), and that one's header. Every other file as it is: nothing is copied."""
    header = _header(data)
    if header[0] is None and data[:8] == PNG_SIGNATURE:
        data = _without_png_metadata(data)
        header = _header(data)
    return data, header


def _header(data: bytes) -> tuple[float | None, str | None, bool]:
    """Width x height as the file's header states it, Pillow's name for the format, and whether the picture has an
    alpha channel or a transparent colour; (None, None, False) when Pillow cannot read the header. Only formats whose
    size Pillow can read are decoded: OpenCV alone reads a few more (e.g. Radiance HDR), and one of those with a
    20,000 x 20,000 header took 6 GB to decode."""
    if _header_blocks(data) > MAX_HEADER_BLOCKS:
        raise ImageError(f"the file holds too much metadata (over {MAX_HEADER_BLOCKS} blocks before the picture): "
                         "save or export the photo again")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:  # reads the header only
                width, height = header.size
                transparent = header.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in header.info
                return width * height, header.format, transparent
    except Image.DecompressionBombError:  # Pillow's own limit, about 179 megapixels
        return float("inf"), None, False
    except Exception:  # not an image Pillow knows, or a damaged header
        return None, None, False


def _header_blocks(data: bytes) -> int:
    """How many blocks (JPEG segments, PNG chunks) come before the picture's data in a JPEG or PNG, counted up to
    MAX_HEADER_BLOCKS + 1; 0 for other formats."""
    blocks = 0
    if data[:2] == b"\xff\xd8":  # JPEG: marker segments up to the frame header (SOFn) or the scan (SOS)
        i = 2
        while i + 4 <= len(data) and blocks <= MAX_HEADER_BLOCKS and data[i] == 0xFF:
            marker = data[i + 1]
            if marker == 0xDA or (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)):
                break
            blocks += 1
            if marker == 0xFF:  # a fill byte
                i += 1
            elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
                i += 2
            else:
                i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    elif data[:8] == PNG_SIGNATURE:
        blocks = sum(1 for _ in _png_chunks(data))
    return blocks


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """A PNG's chunks before its first image data, as (type, start, end) in `data`: at most MAX_HEADER_BLOCKS + 1."""
    i, count = 8, 0
    while i + 8 <= len(data) and count <= MAX_HEADER_BLOCKS and data[i + 4 : i + 8] != b"IDAT":
        end = i + 12 + int.from_bytes(data[i : i + 4], "big")
        yield data[i + 4 : i + 8], i, end
        i, count = end, count + 1


def _without_png_metadata(data: bytes) -> bytes:
    """A PNG without its text chunks and ICC profile (anything else as it is). Pillow refuses to unpack one of those
    past 1 MB, and photo editors write XMP that big; the pixels do not need them (neither OpenCV nor SpotCheck applies
    an ICC profile, and EXIF orientation has a chunk of its own, kept)."""
    chunks = list(_png_chunks(data))
    if not any(kind in PNG_METADATA for kind, _, _ in chunks):
        return data
    kept = [data[start:end] for kind, start, end in chunks if kind not in PNG_METADATA]
    return b"".join([data[:8], *kept, data[chunks[-1][2]:]])


def _is_heic(data: bytes) -> bool:
    """An ISO media file ("ftyp" box) whose brands say HEVC-coded HEIF, i.e. HEIC, not AVIF."""
    if data[4:8] != b"ftyp":
        return False
    brands = {data[i : i + 4] for i in range(16, min(int.from_bytes(data[:4], "big"), len(data), 64), 4)}
    major = data[8:12]
    return major in _HEVC_BRANDS or (major in (b"mif1", b"msf1") and not brands & {b"avif", b"avis"})


def _decode_heic(data: bytes) -> np.ndarray:
    """A HEIC photo as RGB uint8, upright, decoded by data/heic_worker.py in a process of its own."""
    try:
        done = subprocess.run([sys.executable, "-I", str(HEIC_WORKER), str(MAX_PIXELS)], input=data,
                              capture_output=True, timeout=HEIC_SECONDS)
    except subprocess.TimeoutExpired as err:
        raise ImageError(f"the HEIC photo took over {HEIC_SECONDS} s to decode") from err
    if done.returncode in (2, 3):  # the worker's reason; 3: over the pixel limit
        reason = done.stderr.decode(errors="replace").strip().splitlines()[-1]
        raise (ImageTooLarge if done.returncode == 3 else ImageError)(reason)
    height, width = struct.unpack("<II", done.stdout[:8]) if len(done.stdout) >= 8 else (0, 0)
    if done.returncode != 0 or height * width == 0 or len(done.stdout) != 8 + height * width * 3:
        raise ImageError(HEIC_FAILED)  # killed (e.g. a segmentation fault), or it wrote something else
    return np.frombuffer(done.stdout, np.uint8, offset=8).reshape(height, width, 3).copy()  # writable, like the rest


def _decode_on_white(data: bytes) -> np.ndarray:
    """A picture with transparency as RGB uint8, upright, its transparent parts white, as the web page shows it.
    (OpenCV drops the alpha and keeps whatever colour lies under it: a cut-out on black read as "too dark", and a
    fully transparent picture as a spot.)

    Laid on white a band of rows at a time, into the result: no full-size copy is made besides Pillow's decoded
    picture and the result (and, for a picture its EXIF tag turns, the turned picture, for a moment). Copies of the
    whole picture had taken 1.4 GB for an 8000 x 8000 16-bit RGBA PNG; it takes 0.46 GB."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            ImageOps.exif_transpose(image, in_place=True)  # in place: an upright picture is not copied
            if _is_16_bit_png(data):
                _transparent_colour_to_8_bits(image)
            width, height = image.size
            rgb = np.empty((height, width, 3), np.uint8)
            rows = max(1, BAND_PIXELS // width)
            for top in range(0, height, rows):
                band = image.crop((0, top, width, min(top + rows, height)))
                rgb[top : top + band.height] = _on_white(_with_alpha(band))
            return rgb
    except Exception as err:  # a damaged stream behind a readable header
        raise ImageError(UNREADABLE) from err


def _is_16_bit_png(data: bytes) -> bool:
    """Whether the file is a PNG of 16 bits per sample (its IHDR chunk's bit depth)."""
    return data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and data[24:25] == b"\x10"


def _transparent_colour_to_8_bits(image: Image.Image) -> None:
    """A 16-bit colour PNG's transparent colour made the 8-bit one of the picture Pillow decodes (the high byte of
    each sample): Pillow compares its 16 bits with the 8-bit pixels, which never matched, and the transparent parts
    kept their colour. Colours whose high bytes match it become transparent too: 8 bits cannot tell them apart."""
    if image.mode == "RGB" and "transparency" in image.info:
        image.info["transparency"] = tuple(level >> 8 for level in image.info["transparency"])


def _with_alpha(band: Image.Image) -> np.ndarray:
    """Part of a picture as grey+alpha (H, W, 2) or RGBA (H, W, 4) uint8 pixels: Pillow's own where it holds those,
    else converted (a palette's or a transparent colour's transparency made an alpha channel)."""
    if band.mode.startswith("I"):  # 16-bit grey, one level transparent (a PNG's)
        return _grey_16_with_alpha(np.asarray(band), band.info["transparency"])
    return np.asarray(band if band.mode in ("LA", "RGBA") else band.convert("RGBA"))


def _grey_16_with_alpha(levels: np.ndarray, transparent: int) -> np.ndarray:
    """16-bit grey levels as grey+alpha uint8: each level's high byte, the transparent level see-through. (Pillow's
    own conversion clips each level to 255: such a picture had come out white, "overexposed".)"""
    alpha = np.where(levels == transparent, 0, 255)
    return np.stack([levels >> 8, alpha], axis=-1).astype(np.uint8)


def _on_white(pixels: np.ndarray) -> np.ndarray:
    """Grey+alpha or RGBA uint8 pixels laid on white: grey (H, W, 1) or RGB (H, W, 3) uint8, each colour moved
    towards white as far as the pixel is see-through, rounded as Pillow's alpha_composite rounds. In integer maths:
    the largest product, 255 * 255, fits in uint16."""
    colour = pixels[..., :-1].astype(np.uint16)
    see_through = 255 - pixels[..., -1:].astype(np.uint16)
    return (colour + ((255 - colour) * see_through + 127) // 255).astype(np.uint8)


def _decode_avif(data: bytes) -> np.ndarray:
    """An AVIF photo as RGB uint8, upright (Pillow applies the EXIF tag)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except Exception as err:  # a damaged stream behind a readable header
        raise ImageError(UNREADABLE) from err


def is_image_file(path: str | os.PathLike) -> bool:
    """True for the file suffixes batch scoring and folder datasets pick up."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES
