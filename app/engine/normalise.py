"""The Pillow route: decode, flatten alpha onto white, turn, re-encode for img2pdf."""

from __future__ import annotations

import io

import img2pdf
from PIL import Image

from app.engine.facts import _ALPHA_MODES, _MIRRORED, _ROTATION, _Facts
from app.engine.img2pdf_route import _IMG2PDF_FORMAT, PNG_COMPRESS_LEVEL, _jp2_dpi
from app.engine.inspect import _open, _tiff_dpi


def _normalise(data: bytes, kind: str, facts: _Facts) -> tuple[bytes, int, tuple[float, float]]:
    """Re-encode frame 0 in a form img2pdf accepts.

    Returns (bytes, rotation left to do, dpi of the source for the pixels as
    returned): the page gets exactly the size img2pdf gives the source format.
    One decoded image is alive at a time where possible: each step closes the last.
    """
    im = _open(data, kind)
    try:
        if kind == "tiff":
            dpi = _tiff_dpi(im, facts)
        elif kind == "jp2":
            dpi = _jp2_dpi(data)
        else:
            dpi = img2pdf.pil_get_dpi(im, _IMG2PDF_FORMAT[kind], img2pdf.default_dpi)
        im.load()
        rotation = _ROTATION.get(facts.orientation, 0)
        transpose = _MIRRORED.get(facts.orientation)
        if transpose is not None:
            im = _replace(im, im.transpose(transpose))
            rotation = 0
        icc = im.info.get("icc_profile")
        if transpose in {Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE}:
            dpi = (dpi[1], dpi[0])
        dpi = (float(dpi[0]), float(dpi[1]))
        if kind == "jpeg" and im.mode in {"RGB", "L", "CMYK"}:
            # The source was lossy already; a PNG of a photo would be several times larger.
            return _encode(im, "JPEG", quality=95, icc_profile=icc, dpi=dpi), rotation, dpi
        if im.mode in _ALPHA_MODES or "transparency" in im.info:
            im = _replace(im, _flatten(im))
        elif im.mode.startswith("I;16"):
            if im.mode not in {"I;16", "I;16B"}:
                im = _replace(im, im.convert("I;16"))
            icc = None  # PNG stores 16-bit greyscale directly; embed copies it
        elif im.mode in {"I", "F"}:
            im = _replace(im, _to_l(im))
        elif im.mode not in {"RGB", "L", "1", "P"}:
            im = _replace(im, im.convert("RGB"))
        if icc and im.mode not in {"RGB", "L"}:
            icc = None
        return (
            _encode(im, "PNG", icc_profile=icc, dpi=dpi, compress_level=PNG_COMPRESS_LEVEL),
            rotation,
            dpi,
        )
    finally:
        im.close()


def _replace(old: Image.Image, new: Image.Image) -> Image.Image:
    old.close()
    return new


def _flatten(im: Image.Image) -> Image.Image:
    """Composite onto white: transparent areas must print as paper, not black."""
    if im.mode not in {"RGBA", "LA"}:
        im = im.convert("LA" if im.mode in {"La", "L"} else "RGBA")
    if im.mode == "LA":
        out = Image.new("L", im.size, 255)
        out.paste(im.getchannel("L"), mask=im.getchannel("A"))
    else:
        out = Image.new("RGB", im.size, (255, 255, 255))
        out.paste(im, mask=im)  # RGBA onto RGB pastes in place; the mask is its alpha
    return out


def _to_l(im: Image.Image) -> Image.Image:
    """32-bit int/float greyscale -> 8 bits, scaled by the actual range."""
    low, high = im.getextrema()
    span = (high - low) or 1
    return im.point(lambda v: (v - low) * 255.0 / span).convert("L")


def _encode(im: Image.Image, fmt: str, **params) -> bytes:
    params = {k: v for k, v in params.items() if v is not None}
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()
