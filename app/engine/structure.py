"""Byte-level caps, checked before any decoder or header parser sees the file.

Pillow's and img2pdf's header parsers walk every marker, chunk, box, block and
IFD a file holds, keep some of them, and loop in Python: a 64x64 JPEG padded
with 5 M empty APP5 segments took 1.4 GiB and a minute; a 1x1-page TIFF chain
of 180 k IFDs, six minutes. A real image has a handful of each. So this module
walks the container structure itself, in bounded time (it stops at each cap),
refuses files beyond the caps with `ImageTooComplex` (413), and reports the
few facts the memory estimate needs (JPEG progressive/components, JPEG 2000
bit depth, frames up to FRAMES_COUNTED).

Malformed structure is not judged here (the decoders report it, inside the
sandbox); only what would make them do too much. The one exception is JPEG
2000, which is embedded verbatim without a decoder seeing its data: its box
and codestream structure is checked here (`Structure.sound`), and a file that
fails the check is decoded instead of copied.
"""

from __future__ import annotations

import itertools
import re
import struct
from dataclasses import dataclass

from app.errors import ImageTooComplex

# JPEG: segments before the first scan (real files: ~5-30; an ICC profile split
# over APP2 takes at most 255), and scans (progressive files: ~10).
JPEG_MAX_SEGMENTS = 1024
JPEG_MAX_SCANS = 256
# JPEG: fill bytes (FF before a marker) and junk between segments before the
# first scan, in all. Pillow steps over them one byte at a time in Python (20 MiB
# of fill bytes took > 15 s per open); encoders write a few, if any.
JPEG_MAX_STRAY_BYTES = 65536
# PNG: chunks in all (a 73 MB file in 64 KB IDAT chunks has ~1,100) and chunks
# other than IDAT (metadata: a few).
PNG_MAX_CHUNKS = 65536
PNG_MAX_OTHER_CHUNKS = 1024
# GIF: extension blocks before the first image.
GIF_MAX_BLOCKS_BEFORE_IMAGE = 1024
# WebP: RIFF chunks (an animation has one per frame).
WEBP_MAX_CHUNKS = 4096
# JPEG 2000: boxes at the top level and inside each superbox.
JP2_MAX_BOXES = 1024
# JPEG 2000: marker segments in the main header and in each tile-part header
# (real files: ~5-10), and tile-parts in all (Isot is 16-bit, TPsot 8-bit; a
# 40 MP image in 64x64 tiles has ~10 k).
JP2_MAX_HEADER_MARKERS = 256
JP2_MAX_TILE_PARTS = 65536
# Frames are counted up to this many and no further (only the first is converted).
FRAMES_COUNTED = 64


@dataclass(frozen=True)
class Structure:
    frames: int = 1
    progressive: bool = False  # JPEG: SOF2/6/10/14 (decoding buffers every coefficient)
    components: int = 3  # JPEG: colour components of the frame
    depth: int = 8  # JPEG 2000: bits per component (max)
    sound: bool = True  # JPEG 2000: boxes and codestream pass _jp2_sound


def scan(data: bytes, kind: str) -> Structure:
    """Walk the file's structure within the caps; ImageTooComplex beyond them."""
    walker = _WALKERS.get(kind)
    if walker is None:
        return Structure()
    try:
        return walker(data)
    except (struct.error, IndexError):
        # Cut short: the decoder reports it (a JPEG 2000 is decoded, not copied).
        return Structure(sound=kind != "jp2")


def _too_complex() -> ImageTooComplex:
    return ImageTooComplex()


# --- JPEG ------------------------------------------------------------------

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}
# Sequential, not hierarchical: baseline, extended (Huffman or arithmetic).
_SEQUENTIAL = {0xC0, 0xC1, 0xC9}
_SOS = re.compile(b"\xff\xda")
_FILL = re.compile(b"\xff+")
_NOT_FF = re.compile(b"[^\xff]+")


def _jpeg(data: bytes) -> Structure:
    pos, segments, size = 2, 0, len(data)
    progressive, components, frame = False, 3, 0
    stray = 0
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            # Junk between segments: Pillow skips it byte by byte; count it, stop here.
            junk = _NOT_FF.match(data, pos, pos + JPEG_MAX_STRAY_BYTES + 1)
            if junk is not None and stray + junk.end() - pos > JPEG_MAX_STRAY_BYTES:
                raise _too_complex()
            break
        if data[pos + 1] == 0xFF:  # fill bytes: all but the last FF before the marker
            run = _FILL.match(data, pos, pos + JPEG_MAX_STRAY_BYTES + 2)
            assert run is not None
            stray += run.end() - pos - 1
            if stray > JPEG_MAX_STRAY_BYTES:
                raise _too_complex()
            pos = run.end() - 1
            continue
        marker = data[pos + 1]
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            # Markers without a length (RST, TEM) have no place before a scan;
            # Pillow steps over each: they count as segments.
            segments += 1
            if segments > JPEG_MAX_SEGMENTS:
                raise _too_complex()
            pos += 2
            continue
        if marker == 0xD9:
            break
        segments += 1
        if segments > JPEG_MAX_SEGMENTS:
            raise _too_complex()
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in _SOF and pos + 10 <= size:
            frame = marker
            progressive = marker in _PROGRESSIVE
            components = data[pos + 9]
        if marker == 0xDA:
            if frame in _SEQUENTIAL and pos + 4 < size and data[pos + 4] == components:
                # A sequential file whose first scan holds every component is one
                # scan: libjpeg stops at a second SOS ("broken data stream"), so
                # none can cost a decoder anything. Not counting saves a pass
                # over the whole file (~1.7 ms for 6 MB, a large share of a
                # passthrough's CPU).
                return Structure(progressive=False, components=components or 3)
            break
        pos += 2 + length
    # 0xFF 0xDA never occurs inside entropy-coded data (an 0xFF there is
    # followed by 0x00), so counting it counts the scans: progressive files and
    # sequential ones coded a component (or a few) per scan.
    # A regular expression finds them in ~1/3 of bytes.count's time (0xFF is
    # frequent in the data: stuffing), and stops at the cap.
    if len(list(itertools.islice(_SOS.finditer(data), JPEG_MAX_SCANS + 1))) > JPEG_MAX_SCANS:
        raise _too_complex()
    return Structure(progressive=progressive, components=components or 3)


# --- PNG -------------------------------------------------------------------


def _png(data: bytes) -> Structure:
    pos, chunks, other, size = 8, 0, 0, len(data)
    while pos + 8 <= size:
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunks += 1
        if kind != b"IDAT":
            other += 1
        if chunks > PNG_MAX_CHUNKS or other > PNG_MAX_OTHER_CHUNKS:
            raise _too_complex()
        if kind == b"IEND":
            break
        pos += 12 + length
    return Structure()


# --- GIF -------------------------------------------------------------------


def _gif_sub_blocks(data: bytes, pos: int) -> int:
    while True:
        n = data[pos]
        pos += 1
        if n == 0:
            return pos
        pos += n


def _gif(data: bytes) -> Structure:
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    frames = blocks = 0
    while pos < len(data) and frames < FRAMES_COUNTED:
        block = data[pos]
        if block == 0x3B:
            break
        if block == 0x21:
            if frames == 0:
                blocks += 1
                if blocks > GIF_MAX_BLOCKS_BEFORE_IMAGE:
                    raise _too_complex()
            pos = _gif_sub_blocks(data, pos + 2)
        elif block == 0x2C:
            frames += 1
            local = data[pos + 9]
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0)
            pos = _gif_sub_blocks(data, pos + 1)  # after the LZW minimum code size
        else:
            break
    return Structure(frames=max(frames, 1))


# --- TIFF ------------------------------------------------------------------


def _tiff(data: bytes) -> Structure:
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack_from(order + "I", data, 4)
    seen: set[int] = set()
    while offset and offset not in seen and len(seen) < FRAMES_COUNTED:
        seen.add(offset)
        if offset + 2 > len(data):
            break
        (entries,) = struct.unpack_from(order + "H", data, offset)
        end = offset + 2 + 12 * entries
        if end + 4 > len(data):
            break
        (offset,) = struct.unpack_from(order + "I", data, end)
    return Structure(frames=max(len(seen), 1))


# --- WebP ------------------------------------------------------------------


def _webp(data: bytes) -> Structure:
    pos, chunks, frames, size = 12, 0, 0, len(data)
    while pos + 8 <= size:
        kind, length = struct.unpack_from("<4sI", data, pos)
        chunks += 1
        if chunks > WEBP_MAX_CHUNKS:
            raise _too_complex()
        if kind == b"ANMF":
            frames += 1
        pos += 8 + length + (length & 1)
    return Structure(frames=min(max(frames, 1), FRAMES_COUNTED))


# --- JPEG 2000 -------------------------------------------------------------


def _boxes(data: bytes, start: int, end: int):
    """(type, contents start, contents end) of each box, at most JP2_MAX_BOXES."""
    pos, count = start, 0
    while pos + 8 <= end:
        count += 1
        if count > JP2_MAX_BOXES:
            raise _too_complex()
        length, kind = struct.unpack_from(">I4s", data, pos)
        head = 8
        if length == 1:
            (length,) = struct.unpack_from(">Q", data, pos + 8)
            head = 16
        if length == 0:
            length = end - pos
        if length < head:
            return  # img2pdf and Pillow stop here too, or fail
        yield kind, pos + head, min(pos + length, end)
        pos += length


def _jp2(data: bytes) -> Structure:
    sound = _jp2_sound(data)
    if data[:4] == b"\xff\x4f\xff\x51":
        return Structure(depth=_siz_depth(data, 0), sound=sound)
    depth = 8
    for kind, start, end in _boxes(data, 0, len(data)):
        if kind == b"jp2h":
            for sub, s, e in _boxes(data, start, end):
                if sub == b"ihdr" and e - s >= 11:
                    bpc = data[s + 10]
                    if bpc != 0xFF:
                        depth = (bpc & 0x7F) + 1
                elif sub == b"bpcc":
                    depth = max([(b & 0x7F) + 1 for b in data[s:e]] or [depth])
                elif sub == b"res ":
                    for _ in _boxes(data, s, e):
                        pass
        elif kind == b"jp2c":
            depth = max(depth, _siz_depth(data, start))
    return Structure(depth=depth, sound=sound)


def _siz_depth(data: bytes, start: int) -> int:
    """Deepest component in a codestream's SIZ segment (FF4F FF51 ...)."""
    if data[start : start + 4] != b"\xff\x4f\xff\x51":
        return 8
    (count,) = struct.unpack_from(">H", data, start + 40)
    sizes = data[start + 42 : start + 42 + 3 * min(count, 16384) : 3]
    return max([(b & 0x7F) + 1 for b in sizes] or [8])


class _Unsound(Exception):
    pass


def _need(condition: bool) -> None:
    if not condition:
        raise _Unsound()


def _jp2_sound(data: bytes) -> bool:
    """Whether the file's structure is what ITU-T T.800 Annex A and Annex I
    require of what a PDF reader is handed verbatim (/JPXDecode): a .jp2's
    boxes (signature, ftyp, jp2h with ihdr and colr, jp2c) with ihdr agreeing
    with the codestream, and the codestream's marker segments and tile-parts
    (see _codestream_sound). Linear in the number of boxes and markers, within
    the caps (ImageTooComplex beyond them); the coded data is not decoded."""
    try:
        if data[:4] == b"\xff\x4f\xff\x51":
            _codestream_sound(data, 0, len(data))
        else:
            _jp2_boxes_sound(data)
    except (_Unsound, struct.error, IndexError):
        return False
    return True


def _exact_boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """The boxes that tile [start, end) exactly (each inside it, none cut short)."""
    out = []
    pos = start
    while pos < end:
        _need(pos + 8 <= end)
        if len(out) >= JP2_MAX_BOXES:
            raise _too_complex()
        length, kind = struct.unpack_from(">I4s", data, pos)
        head = 8
        if length == 1:
            _need(pos + 16 <= end)
            (length,) = struct.unpack_from(">Q", data, pos + 8)
            head = 16
        elif length == 0:
            length = end - pos
        _need(head <= length <= end - pos)
        out.append((kind, pos + head, pos + length))
        pos += length
    return out


# ihdr's NC -> the colr EnumCS values the copy routes embed (17 grey, 16 sRGB).
_ENUM_CS = {1: (b"\x00\x00\x00\x11",), 3: (b"\x00\x00\x00\x10",)}


def _jp2_boxes_sound(data: bytes) -> None:
    boxes = _exact_boxes(data, 0, len(data))
    _need(len(boxes) >= 4)
    kind, s, e = boxes[0]
    _need(kind == b"jP  " and data[s:e] == b"\r\n\x87\n")
    kind, s, e = boxes[1]
    _need(kind == b"ftyp" and e - s >= 8 and (e - s) % 4 == 0)
    _need(b"jp2 " in {data[at : at + 4] for at in range(s + 8, e, 4)})
    header = next((b for b in boxes if b[0] == b"jp2h"), None)
    stream = next((b for b in boxes if b[0] == b"jp2c"), None)
    _need(header is not None and stream is not None and header[1] < stream[1])
    assert header is not None and stream is not None
    children = _exact_boxes(data, header[1], header[2])
    _need(bool(children) and children[0][0] == b"ihdr" and children[0][2] - children[0][1] == 14)
    s = children[0][1]
    height, width, nc, bpc, c = struct.unpack_from(">IIHBB", data, s)
    _need(c == 7 and data[s + 12] <= 1 and data[s + 13] <= 1)
    colr = [b for b in children if b[0] == b"colr"]
    _need(bool(colr))
    for _, cs, ce in colr:
        _need(ce - cs >= 3 and data[cs] in (1, 2, 3, 4))
        _need(data[cs] != 1 or ce - cs == 7)
    # What the copy routes can name as a PDF colour space (img2pdf reads every
    # colr box and raises on anything but sRGB or greyscale; a palette maps
    # components to others): any other file is decoded.
    for _, cs, ce in colr:
        _need(data[cs] == 1 and data[cs + 3 : ce] in _ENUM_CS.get(nc, ()))
    _need(not any(kind == b"pclr" for kind, _, _ in children))
    bpcc = [b for b in children if b[0] == b"bpcc"]
    _need(len(bpcc) == (bpc == 0xFF))
    for kind, cs, ce in children:
        if kind == b"res ":
            for sub, rs, re_ in _exact_boxes(data, cs, ce):
                _need(sub not in (b"resc", b"resd") or re_ - rs == 10)
    siz = _codestream_sound(data, stream[1], stream[2])
    _need((width, height, nc) == (siz.width, siz.height, len(siz.depths)))
    if bpc == 0xFF:
        _need(bytes(siz.depths) == data[bpcc[0][1] : bpcc[0][2]])
    else:
        _need(set(siz.depths) == {bpc})


@dataclass(frozen=True)
class _Siz:
    width: int
    height: int
    depths: bytes  # Ssiz of each component: (bits - 1), 0x80 if signed


# Marker segments a Part 1 main header and tile-part header may hold (T.800
# Table A.2, with CAP and CPF of Part 15's 2019 revision): any other marker
# sends the file to the decoder.
_MAIN_MARKERS = frozenset(
    {0x50, 0x52, 0x53, 0x55, 0x57, 0x59, 0x5C, 0x5D, 0x5E, 0x5F, 0x60, 0x63, 0x64}
)
_TILE_MARKERS = frozenset({0x52, 0x53, 0x58, 0x5C, 0x5D, 0x5E, 0x5F, 0x61, 0x64})


def _segment(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(marker, length) of the marker segment at pos, inside [.., end)."""
    _need(pos + 4 <= end and data[pos] == 0xFF)
    marker, length = data[pos + 1], struct.unpack_from(">H", data, pos + 2)[0]
    _need(length >= 2 and pos + 2 + length <= end)
    return marker, length


def _cod_sound(data: bytes, pos: int, length: int, wide: int) -> None:
    """A COD (wide 0) or a COC (wide: the size of Ccoc): Scod, SGcod (COD only:
    progression order, layers, MCT), SPcod (levels, code-block size, transform)
    and the precinct sizes Scod announces."""
    scod = data[pos + 4 + wide]
    _need(scod < 8)  # precincts, SOP, EPH (higher bits: Part 2)
    if wide == 0:
        order, layers, mct = struct.unpack_from(">BHB", data, pos + 5)
        _need(order <= 4 and layers >= 1 and mct <= 1)
        sp, base = pos + 9, 12
    else:
        sp, base = pos + 5 + wide, 8 + wide
    levels, xcb, ycb, style, transform = data[sp : sp + 5]
    _need(levels <= 32 and xcb <= 8 and ycb <= 8 and xcb + ycb <= 8 and transform <= 1)
    _need(style < 0x40)  # Part 1 code-block styles (0x40: HTJ2K, Part 15)
    _need(length == base + (levels + 1 if scod & 1 else 0))


def _qcd_sound(data: bytes, pos: int, length: int, offset: int) -> None:
    style = data[pos + 4 + offset] & 0x1F
    rest = length - 3 - offset
    _need(style <= 2 and rest >= 1)
    _need(style != 1 or rest == 2)
    _need(style != 2 or (rest % 2 == 0 and rest >= 2))


def _codestream_sound(data: bytes, start: int, end: int) -> _Siz:
    """T.800 Annex A: SOC, SIZ, a main header with one COD and one QCD (COC/QCC
    for existing components), then tile-parts: SOT with Isot below the tile
    count, TPsot counting each tile's parts in order and below a non-zero
    TNsot, Psot landing exactly on the next SOT or on EOC (0: on EOC), every
    tile present, its last part ending at EOC."""
    _need(data[start : start + 4] == b"\xff\x4f\xff\x51")
    _, length = _segment(data, start + 2, end)
    (rsiz, xsiz, ysiz, xo, yo, xt, yt, xto, yto, csiz) = struct.unpack_from(
        ">HIIIIIIIIH", data, start + 6
    )
    # Part 1 capabilities and profiles (0x4000: HTJ2K, 0x8000: Part 2 extensions).
    _need(rsiz & 0xC000 == 0 and (rsiz <= 7 or rsiz >= 0x100))
    _need(1 <= csiz <= 16384 and length == 38 + 3 * csiz)
    _need(xsiz > xo and ysiz > yo and xt > 0 and yt > 0)
    _need(xto <= xo and yto <= yo and xto + xt > xo and yto + yt > yo)
    comps = data[start + 42 : start + 42 + 3 * csiz]
    depths = comps[0::3]
    _need(all((d & 0x7F) < 38 for d in depths))
    # Copied, every component covers the whole page: subsampled ones are decoded.
    _need(set(comps[1::3]) == {1} and set(comps[2::3]) == {1})
    # Copied, the components share one /BitsPerComponent of a /Device space:
    # signed or mixed-depth ones are decoded.
    _need(len(set(depths)) == 1 and not depths[0] & 0x80)
    tiles = -(-(xsiz - xto) // xt) * -(-(ysiz - yto) // yt)
    _need(tiles <= 65535)
    wide = 2 if csiz > 256 else 1

    def header(pos: int, stop: bytes, main: bool) -> int:
        """Marker segments from pos to the first `stop` marker (its position)."""
        cod = qcd = 0
        for _ in range(JP2_MAX_HEADER_MARKERS + 1):  # the segments, then the stop marker
            if data[pos : pos + 2] == stop:
                if main:
                    _need(cod == 1 and qcd == 1)
                return pos
            marker, length = _segment(data, pos, end)
            _need(marker in (_MAIN_MARKERS if main else _TILE_MARKERS))
            if marker == 0x64:
                _need(length >= 4 and struct.unpack_from(">H", data, pos + 4)[0] <= 1)
            if marker == 0x52:
                cod += 1
                _need(length >= 12)
                _cod_sound(data, pos, length, 0)
            elif marker == 0x53:
                _need(length >= 8 + wide)
                _need(int.from_bytes(data[pos + 4 : pos + 4 + wide], "big") < csiz)
                _cod_sound(data, pos, length, wide)
            elif marker == 0x5C:
                qcd += 1
                _qcd_sound(data, pos, length, 0)
            elif marker == 0x5D:
                _need(length >= 4 + wide)
                _need(int.from_bytes(data[pos + 4 : pos + 4 + wide], "big") < csiz)
                _qcd_sound(data, pos, length, wide)
            pos += 2 + length
        raise _too_complex()

    pos = header(start + 4 + length, b"\xff\x90", True)
    seen = bytearray(tiles)  # tile-parts of each tile so far
    total = [0] * tiles  # TNsot of each tile (0: not given)
    for _ in range(JP2_MAX_TILE_PARTS):
        marker, length = _segment(data, pos, end)
        _need(marker == 0x90 and length == 10)
        isot, psot, tpsot, tnsot = struct.unpack_from(">HIBB", data, pos + 4)
        _need(isot < tiles and tpsot == seen[isot] and seen[isot] < 255)
        if total[isot] == 0:
            total[isot] = tnsot
        _need(tnsot in (0, total[isot]) and (tnsot == 0 or tpsot < tnsot))
        seen[isot] += 1
        nxt = end - 2 if psot == 0 else pos + psot
        _need(psot == 0 or psot >= 14)
        _need(nxt <= end - 2)
        sod = header(pos + 12, b"\xff\x93", False)
        _need(sod + 2 <= nxt)
        pos = nxt
        if data[pos : pos + 2] == b"\xff\xd9":
            break
        _need(psot != 0)
    else:
        raise _too_complex()
    _need(all(seen))
    _need(all(t == 0 or t == n for t, n in zip(total, seen, strict=True)))
    return _Siz(xsiz - xo, ysiz - yo, depths)


_WALKERS = {
    "jpeg": _jpeg,
    "png": _png,
    "gif": _gif,
    "tiff": _tiff,
    "webp": _webp,
    "jp2": _jp2,
}
