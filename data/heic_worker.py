"""Decode one HEIC photo in a process of its own: `python heic_worker.py MAX_PIXELS < photo.heic > pixels`.

`data.images` runs this script for every HEIC/HEIF file rather than decoding in its own process, because
libheif's Python binding can crash the whole process on a damaged file (a segmentation fault on a HEIC whose
metadata item has an unknown type, found by fuzzing pi-heif 1.4): a crash here is a clear error there, and the
web page or a batch run goes on. Only Pillow, pi-heif and numpy are imported, so it starts in a fraction of a
second.

Output: height and width as two little-endian uint32, then the RGB uint8 pixels, upright (libheif applies the
file's own rotation and pi-heif then resets the EXIF tag; `exif_transpose` applies any that remain). Exit
status 2 with the reason on stderr for a file that cannot be decoded, 3 for one over MAX_PIXELS.
"""
import io
import struct
import sys

import numpy as np
import pi_heif
from PIL import Image, ImageOps


def main() -> int:
    max_pixels = int(sys.argv[1])
    pi_heif.register_heif_opener()
    try:
        with Image.open(io.BytesIO(sys.stdin.buffer.read())) as image:
            if image.width * image.height > max_pixels:
                print(f"the image is too large (more than {max_pixels // 1_000_000} megapixels)", file=sys.stderr)
                return 3
            rgb = np.ascontiguousarray(ImageOps.exif_transpose(image).convert("RGB"))
    except Exception:
        # data.images.UNREADABLE, written out: this script imports nothing from the project
        print("the file is not a readable image (corrupt, truncated or unsupported format)", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(struct.pack("<II", *rgb.shape[:2]))
    sys.stdout.buffer.write(rgb.tobytes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
