"""Still WebP in horizontal strips: libwebp's own decoder, cropped, through ctypes.

libvips' webpload (and Pillow) decode the whole frame, and keep it more than
once: 8.7 B/px at 40 MP. `webp_strips` asks libwebp (`WebPDecode` with
`options.use_cropping`) for one band of full rows at a time into a buffer of
our own, so only the band is held. The pixels are libwebp's own RGB(A), the
same that Pillow and libvips hand over (fancy upsampling, no dithering).

What each band costs, from libwebp 1.6's source (src/dec/):
- lossy (VP8): a crop decodes every macroblock row from the top down to the
  crop's bottom (intra prediction chains down the image; only the loop filter
  and the YUV->RGB conversion are skipped above the crop), so time grows with
  the number of bands: fewer, taller bands trade memory for speed. With alpha,
  the alpha plane is kept down to the crop's bottom (1 B/px at the last band).
- lossless (VP8L): backward references reach up to a million pixels back, and
  the decoder keeps the whole ARGB frame (4 B/px) whatever the crop; so a
  lossless image goes to the project's own decoder (app.engine.vp8l), which
  keeps only that window, when it is built; libwebp stays the fallback.

Each band is decoded with two extra rows above and below, dropped after: the
fancy upsampler mirrors the chroma at a crop's first and last rows, where the
whole-frame decode reads its neighbours. The library is Pillow's own libwebp
(the pinned Pillow wheel ships it), else the system's libwebp.so.7.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

from PIL import Image

from app.engine import clib, vips, vp8l
from app.engine.png_strips import BadData, _up

# Decoded bytes per band: lossy bands re-decode from the top, so they are tall
# (40 MP RGB: 4 bands); lossless keeps its frame anyway, so they are short.
LOSSY_BAND_BYTES = 32 * 1024 * 1024
LOSSLESS_BAND_BYTES = 8 * 1024 * 1024
_OVERLAP = 2  # rows decoded above and below each band and dropped (see above)
# WEBP_DECODER_ABI_VERSION (decode.h) the structures below follow: 0x0209 since
# libwebp 0.5; 1.6 is 0x0210. libwebp refuses another major (the high byte) and
# keeps a major's structures the same size (their pad fields).
_ABI = 0x0209
_MODE_RGB, _MODE_RGBA = 0, 1
_STATUS_OUT_OF_MEMORY = 1  # VP8_STATUS_OUT_OF_MEMORY
_VP8X_ANIMATION = 0x02
_VP8X_ALPHA = 0x10
_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class Layout:
    """What a WebP's RIFF chunks say, read without libwebp."""

    lossless: bool  # a VP8L image (else VP8, lossy)
    animated: bool
    icc: bytes | None
    exif: bytes | None


def layout(data: bytes) -> Layout | None:
    """The chunks of a WebP, or None if they hold no image data this module
    knows (libwebp then reports the error). app.engine.structure has capped
    their count already."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    pos, end = 12, len(data)
    animated = False
    lossless = None
    icc = exif = None
    while pos + 8 <= end:
        fourcc, size = struct.unpack_from("<4sI", data, pos)
        start = pos + 8
        if fourcc == b"VP8X" and size >= 10 and start < end:  # its flags byte is there
            animated = bool(data[start] & _VP8X_ANIMATION)
        elif fourcc == b"ICCP" and icc is None:
            icc = data[start : start + size]
        elif fourcc == b"EXIF" and exif is None:
            exif = data[start : start + size]
        elif fourcc in {b"VP8 ", b"VP8L"} and lossless is None:
            lossless = fourcc == b"VP8L"
        elif fourcc == b"ANIM":
            animated = True
        pos = start + size + (size & 1)
    if lossless is None and not animated:
        return None
    return Layout(bool(lossless), animated, icc, exif)


def orientation(exif: bytes | None) -> int:
    """The EXIF orientation (1-8; 1 when absent or out of range), as Pillow's
    getexif() reads it from the EXIF chunk."""
    if not exif:
        return 1
    parsed = Image.Exif()
    try:
        parsed.load(exif)
    except Exception:  # Pillow's EXIF parser raises many types on damaged data
        return 1
    value = parsed.get(_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


class _Features(ctypes.Structure):
    _fields_ = [
        ("width", ctypes.c_int),
        ("height", ctypes.c_int),
        ("has_alpha", ctypes.c_int),
        ("has_animation", ctypes.c_int),
        ("format", ctypes.c_int),
        ("pad", ctypes.c_uint32 * 5),
    ]


class _RGBABuffer(ctypes.Structure):
    _fields_ = [("rgba", ctypes.c_void_p), ("stride", ctypes.c_int), ("size", ctypes.c_size_t)]


class _YUVABuffer(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in ("y", "u", "v", "a")]
    _fields_ += [(name, ctypes.c_int) for name in ("y_stride", "u_stride", "v_stride", "a_stride")]
    _fields_ += [(name, ctypes.c_size_t) for name in ("y_size", "u_size", "v_size", "a_size")]


class _BufferUnion(ctypes.Union):
    _fields_ = [("RGBA", _RGBABuffer), ("YUVA", _YUVABuffer)]


class _DecBuffer(ctypes.Structure):
    _fields_ = [
        ("colorspace", ctypes.c_int),
        ("width", ctypes.c_int),
        ("height", ctypes.c_int),
        ("is_external_memory", ctypes.c_int),
        ("u", _BufferUnion),
        ("pad", ctypes.c_uint32 * 4),
        ("private_memory", ctypes.c_void_p),
    ]


_OPTION_NAMES = (
    "bypass_filtering",
    "no_fancy_upsampling",
    "use_cropping",
    "crop_left",
    "crop_top",
    "crop_width",
    "crop_height",
    "use_scaling",
    "scaled_width",
    "scaled_height",
    "use_threads",
    "dithering_strength",
    "flip",
    "alpha_dithering_strength",
)


class _Options(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int) for name in _OPTION_NAMES] + [("pad", ctypes.c_uint32 * 5)]


class _Config(ctypes.Structure):
    _fields_ = [("input", _Features), ("output", _DecBuffer), ("options", _Options)]


_lib = None


def _library():
    """libwebp, loaded once: the copy in the Pillow wheel, else the system's."""
    global _lib
    if _lib is None:
        _lib = clib.load("webp", "webp", _accept) or False
    return _lib or None


def _accept(lib) -> bool:
    if lib.WebPGetDecoderVersion() < 0x010000:
        return False
    lib.WebPInitDecoderConfigInternal.argtypes = [ctypes.POINTER(_Config), ctypes.c_int]
    lib.WebPGetFeaturesInternal.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.POINTER(_Features),
        ctypes.c_int,
    ]
    lib.WebPDecode.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(_Config)]
    # Another ABI major refuses to initialise: these structures are not its own.
    return bool(lib.WebPInitDecoderConfigInternal(_Config(), _ABI))


def available() -> bool:
    return _library() is not None


def features(data: bytes) -> tuple[int, int, bool]:
    """(width, height, alpha) as libwebp reads them; BadData if it cannot."""
    lib = _library()
    found = _Features()
    data = data if isinstance(data, bytes) else bytes(data)  # ctypes passes bytes uncopied
    if lib is None or lib.WebPGetFeaturesInternal(data, len(data), found, _ABI) != 0:
        raise BadData("unreadable WebP header")
    if found.has_animation or found.width <= 0 or found.height <= 0:
        raise BadData("not a still WebP")
    alpha = bool(found.has_alpha)
    if data[12:16] == b"VP8X" and len(data) >= 21 and not data[20] & _VP8X_ALPHA:
        # libwebp decodes an ALPH chunk (or VP8L alpha) whatever the header says;
        # libvips follows the header (and Pillow does for ALPH): opaque.
        alpha = False
    return found.width, found.height, alpha


def band_rows(width: int, bands: int, lossless: bool) -> int:
    """Rows per decoded band: an even count (libwebp snaps a crop's top to even)."""
    budget = LOSSLESS_BAND_BYTES if lossless else LOSSY_BAND_BYTES
    return max(2, budget // max(1, width * bands) // 2 * 2)


def webp_strips(data: bytes, width: int, height: int, alpha: bool, lossless: bool):
    """(colour, alpha) rows, Up-filtered, of a still WebP: libwebp decodes one
    band of `band_rows` rows at a time (plus `_OVERLAP` rows each side), and
    the band is handed on in strips of vips.STRIP_BYTES."""
    vips.load()
    lib = _library()
    if lib is None:
        raise BadData("libwebp not available")
    data = data if isinstance(data, bytes) else bytes(data)  # ctypes passes bytes uncopied
    bands = 4 if alpha else 3
    step = max(1, vips.STRIP_BYTES // (width * bands))
    last_colour = last_alpha = None
    for band in _bands(lib, data, width, height, bands, lossless):
        for a in range(0, len(band), step):
            b = min(len(band), a + step)
            colour = vips.np.ascontiguousarray(band[a:b, :, :3]).reshape(b - a, -1)
            colour_out = _up(colour, last_colour)
            last_colour = colour[-1].copy()
            alpha_out = None
            if alpha:
                mask = vips.np.ascontiguousarray(band[a:b, :, 3])
                alpha_out = _up(mask, last_alpha)
                last_alpha = mask[-1].copy()
            yield colour_out, alpha_out
        del band


def _bands(lib, data: bytes, width: int, height: int, bands: int, lossless: bool, wide=0):
    """The image's rows top to bottom, in bands of (rows, width, bands) uint8 (as
    many rows as a band `wide` pixels wide holds): a lossless image from
    app.engine.vp8l when it is built (its window, not the frame), else libwebp
    cropped to each band (plus `_OVERLAP` rows each side)."""
    wide = max(width, wide)
    payload = vp8l.stream(data) if lossless and vp8l.available() else None
    if payload is not None:
        with vp8l.Decoder(payload, width, height, bands, vp8l.band_rows(wide, bands)) as rows:
            done = 0
            while done < height:
                band = rows.rows(rows.max_rows)
                if not len(band):
                    raise BadData("WebP image data unreadable")
                done += len(band)
                yield band
        return
    step = band_rows(wide, bands, lossless)
    for y0 in range(0, height, step):
        y1 = min(height, y0 + step)
        top, bottom = max(0, y0 - _OVERLAP), min(height, y1 + _OVERLAP)
        band = _decode(lib, data, width, top, bottom, bands, lossless)
        yield band[y0 - top : y1 - top]
        del band


def _decode(lib, data: bytes, width: int, top: int, bottom: int, bands: int, lossless=False):
    """Rows [top, bottom) of the image, full width, as (rows, width, bands) uint8."""
    band = vips.np.empty((bottom - top, width, bands), vips.np.uint8)
    status = _decode_into(lib, data, band, top)
    if status == _STATUS_OUT_OF_MEMORY and not lossless:
        # libwebp also says "out of memory" when an ALPH chunk's header is bad (its
        # alpha decoder fails to start and leaves no decoder to give the real
        # status). The same header read for the first two rows of a lossy image
        # needs a few KB: failing there too, it is the data.
        first = vips.np.empty((min(2, bottom), width, bands), vips.np.uint8)
        if _decode_into(lib, data, first, 0) == _STATUS_OUT_OF_MEMORY:
            raise BadData("WebP alpha data unreadable")
    if status == _STATUS_OUT_OF_MEMORY:
        raise MemoryError()
    if status != 0:  # VP8_STATUS_*: bitstream error, not enough data...
        raise BadData("WebP image data unreadable")
    return band


def _decode_into(lib, data: bytes, band, top: int) -> int:
    """libwebp's status for decoding rows [top, top + len(band)) into `band`."""
    rows, width, bands = band.shape
    config = _Config()
    if not lib.WebPInitDecoderConfigInternal(config, _ABI):
        raise BadData("libwebp refused its configuration")
    options = config.options
    options.use_cropping = 1
    options.crop_left, options.crop_top = 0, top
    options.crop_width, options.crop_height = width, rows
    output = config.output
    output.colorspace = _MODE_RGBA if bands == 4 else _MODE_RGB
    output.is_external_memory = 1
    output.u.RGBA.rgba = band.ctypes.data
    output.u.RGBA.stride = width * bands
    output.u.RGBA.size = band.nbytes
    return lib.WebPDecode(data, len(data), config)


@dataclass(frozen=True)
class FirstFrame:
    """An animated WebP's first frame, as libvips' webpload composes page 0.

    libvips (libvips/foreign/webp2vips.c, read_header and read_next_frame) paints
    the first frame onto a canvas cleared to transparent black: inside the frame
    its decoded RGBA as it is, outside it 0. The canvas keeps an alpha band when
    the container's VP8X alpha flag is set or any frame has alpha or does not
    fill the canvas (libvips 8.18 here: a one-frame animation too); else RGB.
    The frame's ANMF payload (libwebp's src/demux/demux.c, ParseAnimationFrame:
    24-bit X/2, Y/2, width-1, height-1, duration, a flags byte, then ALPH and
    VP8 or a VP8L chunk) is wrapped as a still WebP (`still`) for `_decode`;
    its size is its bitstream's, as demux's (the ANMF width and height are not).
    """

    canvas_width: int
    canvas_height: int
    left: int
    top: int
    width: int
    height: int
    alpha: bool  # the canvas has an alpha band
    lossless: bool
    frame_alpha: bool  # the frame itself has an ALPH chunk or VP8L alpha
    still: bytes


def _u24(data, at: int) -> int:
    return int.from_bytes(data[at : at + 3], "little")


def _frame_image(data, start: int, end: int):
    """(lossless, alpha, the frame's image chunks) of an ANMF payload's chunks
    [start, end) (a view, not a copy), or None when they are not ALPH + VP8 or
    one VP8L."""
    chunks = []
    pos = start
    while pos + 8 <= end:
        fourcc, size = struct.unpack_from("<4sI", data, pos)
        if pos + 8 + size > end:
            return None
        chunks.append((fourcc, pos, pos + 8 + size + (size & 1)))
        pos += 8 + size + (size & 1)
    kinds = [fourcc for fourcc, _, _ in chunks]
    if kinds == [b"VP8L"]:
        _, at, _ = chunks[0]
        header = data[at + 8 : at + 13]
        if len(header) < 5 or header[0] != 0x2F:
            return None
        alpha = bool(int.from_bytes(header[1:5], "little") >> 28 & 1)
        return True, alpha, memoryview(data)[chunks[0][1] : min(chunks[0][2], end)]
    if kinds in ([b"VP8 "], [b"ALPH", b"VP8 "]):
        return False, len(kinds) == 2, memoryview(data)[chunks[0][1] : min(chunks[-1][2], end)]
    return None


def _image_size(lossless: bool, chunks) -> tuple[int, int] | None:
    """A frame's size as its bitstream gives it (the VP8L header, or the VP8
    key frame's after any ALPH chunk): libwebp's demux takes that one, whatever
    the ANMF header says (src/demux/demux.c, SetFrameInfo). None if unreadable."""
    pos = 0
    if not lossless and bytes(chunks[:4]) == b"ALPH":
        size = struct.unpack_from("<I", chunks, 4)[0]
        pos = 8 + size + (size & 1)
    head = bytes(chunks[pos + 8 : pos + 18])
    if lossless:
        return vp8l.size_of(head)
    if len(head) < 10 or head[3:6] != b"\x9d\x01\x2a":
        return None
    width, height = (int.from_bytes(head[i : i + 2], "little") & 0x3FFF for i in (6, 8))
    return (width, height) if width and height else None


def first_frame(data) -> FirstFrame | None:
    """The first frame of an animated WebP when it can be decoded in bands: None
    for a still WebP, a frame past the canvas, frame data this module does not
    know (libvips then composes it, as before) or without libwebp."""
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:16] != b"WEBPVP8X" or not available():
        return None
    flags = data[20]
    if not flags & _VP8X_ANIMATION:
        return None
    canvas_width, canvas_height = _u24(data, 24) + 1, _u24(data, 27) + 1
    pos, end = 30, len(data)
    first = None
    any_alpha = anim = False
    while pos + 8 <= end:
        fourcc, size = struct.unpack_from("<4sI", data, pos)
        start = pos + 8
        if fourcc in {b"ALPH", b"VP8 ", b"VP8L"}:
            return None  # image data outside a frame: libwebp's demux refuses it
        anim = anim or fourcc == b"ANIM"
        if fourcc == b"ANMF":
            if size < 16 or start + size > end:
                return None
            left, top = 2 * _u24(data, start), 2 * _u24(data, start + 3)
            image = _frame_image(data, start + 16, start + size)
            if image is None or (size_ := _image_size(image[0], image[2])) is None:
                return None
            width, height = size_  # not the ANMF header's (see _image_size)
            if left + width > canvas_width or top + height > canvas_height:
                return None  # demux refuses a frame past the canvas
            fills = (left, top, width, height) == (0, 0, canvas_width, canvas_height)
            any_alpha = any_alpha or image[1] or not fills
            if first is None:
                first = (left, top, width, height, image)
        pos = start + size + (size & 1)
    if first is None or not anim:
        return None
    left, top, width, height, (lossless, frame_alpha, chunks) = first
    alpha = bool(flags & _VP8X_ALPHA) or any_alpha
    header = struct.pack("<4sIB3x", b"VP8X", 10, _VP8X_ALPHA if frame_alpha else 0)
    header += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    riff = struct.pack("<4sI4s", b"RIFF", 4 + len(header) + len(chunks), b"WEBP")
    still = b"".join((riff, header, chunks))  # one copy of the frame's chunks (not three)
    return FirstFrame(
        canvas_width, canvas_height, left, top, width, height, alpha, lossless, frame_alpha, still
    )


def frame_strips(frame: FirstFrame):
    """(colour, alpha or None) rows, Up-filtered, of the canvas `frame` describes,
    top to bottom: transparent black rows and columns around the first frame,
    which libwebp decodes in bands of `band_rows` rows (as `webp_strips`)."""
    vips.load()
    np = vips.np
    lib = _library()
    if lib is None:
        raise BadData("libwebp not available")
    bands = 4 if frame.alpha else 3
    width = frame.canvas_width
    step = max(1, vips.STRIP_BYTES // (width * bands))
    last = [None, None]

    def strip(block):
        colour = np.ascontiguousarray(block[:, :, :3]).reshape(block.shape[0], -1)
        colour_out = _up(colour, last[0])
        last[0] = colour[-1].copy()
        alpha_out = None
        if frame.alpha:
            mask = np.ascontiguousarray(block[:, :, 3])
            alpha_out = _up(mask, last[1])
            last[1] = mask[-1].copy()
        return colour_out, alpha_out

    def blank(count: int):
        for y in range(0, count, step):
            yield strip(np.zeros((min(step, count - y), width, bands), np.uint8))

    yield from blank(frame.top)
    for band in _bands(lib, frame.still, frame.width, frame.height, bands, frame.lossless, width):
        for a in range(0, len(band), step):
            b = min(len(band), a + step)
            if frame.width == width:
                yield strip(band[a:b])
                continue
            block = np.zeros((b - a, width, bands), np.uint8)
            block[:, frame.left : frame.left + frame.width] = band[a:b]
            yield strip(block)
        del band
    yield from blank(frame.canvas_height - frame.top - frame.height)
