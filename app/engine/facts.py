"""What inspection learns about an image: `ImageInfo` (public) and `_Facts`.

Also the small header readers both inspection and the routes need (PNG chunks
and eXIf, the orientation tables).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from PIL import Image

from app.errors import InvalidImage

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_ORIENTATION_TAG = 0x0112
_ROTATION = {1: 0, 3: 180, 6: 90, 8: 270}
# Mirrored orientations img2pdf refuses, and the Pillow transpose that undoes each
# (the same table ImageOps.exif_transpose uses).
_MIRRORED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    7: Image.Transpose.TRANSVERSE,
}


@dataclass(frozen=True)
class ImageInfo:
    kind: str  # jpeg/png/gif/tiff/bmp/webp/jp2 (app.sniff names)
    width: int
    height: int
    mode: str  # Pillow mode from the header, e.g. "RGB", "RGBA", "I;16", "P", "L"
    frames: int
    # Conversion route predicted from the header (keys of _COST); "" = unknown,
    # so estimate_peak_bytes assumes the worst route for the kind.
    route: str = field(default="", compare=False)
    # Memory a decoder needs beyond the route's per-pixel cost: libjpeg keeps
    # every DCT coefficient (2 bytes each) of a progressive JPEG it decodes.
    decoder_bytes: int = field(default=0, compare=False)
    # An interlaced PNG: libvips would decode all of it before the first strip.
    interlaced: bool = field(default=False, compare=False)
    # The Adam7 decoder (app.engine.adam7) takes it (any PNG depth): bands of >= 8 full rows.
    adam7: bool = field(default=False, compare=False)
    # A GIF written as an /Indexed image from Pillow's 1 B/px frame.
    indexed: bool = field(default=False, compare=False)
    # A still WebP decoded in bands by libwebp (app.engine.webp); decoder_bytes
    # holds what its decoder keeps (pricing.webp_decoder_bytes).
    webp_bands: bool = field(default=False, compare=False)

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class _Facts:
    """What the header says about how to convert: read without decoding pixels."""

    orientation: int = 1
    png_depth: int = 8
    png_color_type: int = 2
    png_interlaced: bool = False
    tiff_depth: int = 8
    jp2_depth: int = 8
    jp2_sound: bool = True  # JPEG 2000: passes structure._jp2_sound (else decoded)
    transparency: bool = False
    mpo: bool = False  # a JPEG Pillow reads as MPO (img2pdf embeds its first frame only)


def _png_chunks(data: bytes):
    """Yield (type, start, end) of each chunk's payload; InvalidImage if cut short."""
    pos = 8
    size = len(data)
    while pos + 8 <= size:
        length, ctype = struct.unpack_from(">I4s", data, pos)
        start, end = pos + 8, pos + 8 + length
        if end + 4 > size:
            raise InvalidImage()
        yield ctype, start, end
        if ctype == b"IEND":
            return
        pos = end + 4
    raise InvalidImage()


def _png_exif(data: bytes) -> bytes | None:
    try:
        for ctype, start, end in _png_chunks(data):
            if ctype == b"eXIf":
                return data[start:end]
    except InvalidImage:
        return None  # convert_to_pdf reports truncation; inspection only wants orientation
    return None
