"""A VP8L (lossless WebP) bitstream writer that writes exactly what a test states.

Encoders choose transforms, codes and references for size; a test of a decoder
needs the opposite: a stream whose every field it chose, to reach one feature
or one boundary at a time. An `Image` is the header, the transforms in stream
order and the entropy-coded pixels (`Pixels`): a list of symbols (`Lit`, `Hit`,
`Copy`), the colour cache bits, the prefix codes (from explicit code lengths,
`Code`, or made from the symbols used) and the meta prefix codes. `vp8l()`
writes the bitstream, `riff()` wraps it in a file (simple or VP8X), `argb()` is
what the stream decodes to by the specification, or ValueError where a decoder
must refuse it (a copy before the first pixel or past the last).

The layout follows the specification
(https://developers.google.com/speed/webp/docs/webp_lossless_bitstream_specification)
and libwebp's reader (src/dec/vp8l_dec.c), which also fixes what the
specification leaves open: predictor modes 14 and 15 predict black, a palette
index past the palette gives transparent black, a plane code whose distance is
under 1 gives 1.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass, field

NUM_LITERALS = 256
NUM_LENGTHS = 24
NUM_DISTANCES = 40
PLANE_CODES = 120
MAX_DISTANCE = (1 << 20) - PLANE_CODES  # the largest raw distance a distance code holds
CODE_LENGTH_ORDER = (17, 18, 0, 1, 2, 3, 4, 5, 16, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
# src/dec/vp8l_dec.c kCodeToPlane: (dy << 4) | (8 - dx) for plane codes 1..120
CODE_TO_PLANE = bytes.fromhex(
    "1807171928062729161a262a38053739151b363a252b48044749141c353b464a242c58454b343c03"
    "5759131d565a232d444c555b333d68026769121e666a222e545c434d656b323e78017779535d111f"
    "646c424e767a212f757b313f636d525e00747c414f1020626e30737d515f40727e616f50717f6070"
)
GREEN, RED, BLUE, ALPHA, DIST = range(5)
PREDICTOR, CROSS_COLOUR, SUBTRACT_GREEN, COLOUR_INDEXING = range(4)


class Bits:
    """Bits written least significant first, as the VP8L reader takes them."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0  # bits not yet a whole byte
        self.pending = 0
        self.count = 0

    def put(self, value: int, n: int) -> None:
        if value < 0 or value >= 1 << n:
            raise ValueError(f"{value} does not fit in {n} bits")
        self.acc |= value << self.pending
        self.pending += n
        self.count += n
        while self.pending >= 8:
            self.out.append(self.acc & 0xFF)
            self.acc >>= 8
            self.pending -= 8

    def bytes(self) -> bytes:
        return bytes(self.out) + (bytes([self.acc]) if self.pending else b"")


def prefix(value: int) -> tuple[int, int, int]:
    """(prefix symbol, extra bit count, extra bits) of a length or distance code >= 1."""
    d = value - 1
    if d < 4:
        return d, 0, 0
    high = d.bit_length() - 1
    second = (d >> (high - 1)) & 1
    return 2 * high + second, high - 1, d & ((1 << (high - 1)) - 1)


def plane_distance(code: int, xsize: int) -> int:
    """The distance a distance code means in an image `xsize` pixels wide."""
    if code > PLANE_CODES:
        return code - PLANE_CODES
    dist_code = CODE_TO_PLANE[code - 1]
    dist = (dist_code >> 4) * xsize + 8 - (dist_code & 0xF)
    return max(dist, 1)


# --------------------------------------------------------------------------- prefix codes


def balanced(symbols) -> dict[int, int]:
    """Complete code lengths for `symbols`: a balanced tree (one symbol: length 1)."""
    symbols = sorted(set(symbols))
    n = len(symbols)
    if n <= 1:
        return dict.fromkeys(symbols, 1)
    k = (n - 1).bit_length()
    short = (1 << k) - n  # this many at length k - 1, the rest at k
    return {s: (k - 1 if i < short else k) for i, s in enumerate(symbols)}


@dataclass
class Code:
    """One prefix code as stored.

    lengths: symbol -> code length (the canonical code follows from them).
    simple: stored in the simple form (1 or 2 symbols; `symbols` as written,
    `wide` an 8-bit first symbol, default when it is over 1).
    Normal form: `tokens` the code-length symbols as written ((symbol, extra
    bits) pairs, 16/17/18 the repeat codes; default: made from `lengths` with
    repeats), `max_symbol` writes the max_symbol field (the count of tokens
    read; True: the tokens up to the last used symbol, and their count),
    `length_lengths` the code-length code's own lengths (default:
    balanced over the tokens used).
    """

    lengths: dict[int, int]
    simple: bool = False
    symbols: tuple[int, ...] = ()
    wide: bool | None = None
    tokens: list[tuple[int, int]] | None = None
    max_symbol: int | bool | None = None
    length_lengths: dict[int, int] | None = None

    @classmethod
    def of(cls, symbols, **options) -> Code:
        return cls(balanced(symbols), **options)

    @classmethod
    def simple_of(cls, *symbols: int, wide: bool | None = None) -> Code:
        return cls(dict.fromkeys(symbols, 1), simple=True, symbols=symbols, wide=wide)

    def codes(self) -> dict[int, tuple[int, int]]:
        """symbol -> (code, length) of the canonical code; one symbol: no bits."""
        used = sorted((n, s) for s, n in self.lengths.items() if n)
        if len(used) == 1:
            return {used[0][1]: (0, 0)}
        out, code, last = {}, 0, used[0][0] if used else 0
        for n, s in used:
            code <<= n - last
            last = n
            out[s] = (code, n)
            code += 1
        return out

    def table(self) -> dict[int, tuple[int, int]]:
        """symbol -> (bits, count) as written: the code's first bit (its highest) first."""
        return {s: (int(f"{c:0{n}b}"[::-1] or "0", 2), n) for s, (c, n) in self.codes().items()}

    def write_symbol(self, bits: Bits, symbol: int, table=None) -> None:
        bits.put(*(table or self.table())[symbol])

    def write(self, bits: Bits, alphabet: int) -> None:
        if self.simple:
            symbols = self.symbols or tuple(sorted(self.lengths))
            wide = self.wide if self.wide is not None else symbols[0] > 1
            bits.put(1, 1)
            bits.put(len(symbols) - 1, 1)
            bits.put(int(wide), 1)
            bits.put(symbols[0], 8 if wide else 1)
            if len(symbols) == 2:
                bits.put(symbols[1], 8)
            return
        tokens = self.tokens if self.tokens is not None else self._tokens(alphabet)
        lengths = self.length_lengths or balanced(t for t, _ in tokens)
        count = max([4] + [i + 1 for i, s in enumerate(CODE_LENGTH_ORDER) if lengths.get(s)])
        bits.put(0, 1)
        bits.put(count - 4, 4)
        for s in CODE_LENGTH_ORDER[:count]:
            bits.put(lengths.get(s, 0), 3)
        if self.max_symbol is None or self.max_symbol is False:
            bits.put(0, 1)
        else:
            value = len(tokens) if self.max_symbol is True else self.max_symbol
            nbits = next(n for n in range(2, 18, 2) if value - 2 < 1 << n)
            bits.put(1, 1)
            bits.put((nbits - 2) // 2, 3)
            bits.put(value - 2, nbits)
        length_code = Code(lengths)
        table = length_code.table()
        for symbol, extra in tokens:
            length_code.write_symbol(bits, symbol, table)
            if symbol >= 16:
                bits.put(extra, (2, 3, 7)[symbol - 16])

    def _tokens(self, alphabet: int) -> list[tuple[int, int]]:
        """The code lengths as code-length symbols: 17/18 for runs of zeros, 16
        for a run of the previous length; with max_symbol=True, up to the last used."""
        lengths = [self.lengths.get(s, 0) for s in range(alphabet)]
        if self.max_symbol is True:
            last = max(s for s, n in self.lengths.items() if n)
            lengths = lengths[: last + 1]
        tokens: list[tuple[int, int]] = []
        for n, group in itertools.groupby(lengths):
            run = len(list(group))
            while run:
                if n == 0 and run >= 11:
                    step = min(run, 138)
                    tokens.append((18, step - 11))
                elif n == 0 and run >= 3:
                    step = run
                    tokens.append((17, run - 3))
                elif n and run >= 4:
                    step = min(run, 7)
                    tokens += [(n, 0), (16, step - 4)]
                else:
                    step = 1
                    tokens.append((n, 0))
                run -= step
        if self.max_symbol is True and len(tokens) < 2:
            tokens.append((0, 0))
        return tokens


# --------------------------------------------------------------------------- symbols


@dataclass(frozen=True)
class Lit:
    """A literal pixel."""

    a: int
    r: int
    g: int
    b: int

    @classmethod
    def argb(cls, value: int) -> Lit:
        return cls(value >> 24 & 255, value >> 16 & 255, value >> 8 & 255, value & 255)


@dataclass(frozen=True)
class Hit:
    """A colour cache hit: the cache's entry `key`."""

    key: int


@dataclass(frozen=True)
class Copy:
    """A backward reference: `length` pixels from `code` back (a distance code:
    plane codes 1..120, a distance d as d + 120; see `raw`)."""

    length: int
    code: int

    @classmethod
    def raw(cls, length: int, distance: int) -> Copy:
        return cls(length, distance + PLANE_CODES)


def cache_key(argb: int, bits: int) -> int:
    return ((0x1E35A7BD * argb) & 0xFFFFFFFF) >> (32 - bits)


@dataclass
class Pixels:
    """An entropy-coded image: its symbols, colour cache bits, meta prefix codes
    (`meta`: (precision bits, the entropy image as Pixels), level 0 only) and
    prefix codes (`codes`: per group the five codes green, red, blue, alpha,
    distance, each a Code or None for one made from the symbols used)."""

    symbols: list
    cache_bits: int = 0
    meta: tuple[int, Pixels] | None = None
    codes: list[list[Code | None]] | None = None
    groups: int | None = None  # groups written (default: as `codes` or those used)
    cache_flag: bool = False  # the cache's flag even with cache_bits 0 (a bad stream)

    @classmethod
    def of_argb(cls, values, **options) -> Pixels:
        return cls([Lit.argb(v) for v in values], **options)


def group_image(groups: list[int]) -> Pixels:
    """The entropy image holding these group numbers (red: high byte, green: low)."""
    return Pixels([Lit(0, g >> 8, g & 255, 0) for g in groups])


# --------------------------------------------------------------------------- transforms


@dataclass
class Predictor:
    bits: int  # tile size 2**bits, 2..9
    modes: Pixels  # one pixel per tile, the mode in green

    @classmethod
    def of(cls, bits: int, modes: list[int]) -> Predictor:
        return cls(bits, Pixels([Lit(0, 0, m, 0) for m in modes]))


@dataclass
class CrossColour:
    bits: int
    elements: Pixels  # per tile: red_to_blue in red, green_to_blue in green, green_to_red in blue

    @classmethod
    def of(cls, bits: int, multipliers: list[tuple[int, int, int]]) -> CrossColour:
        """multipliers: (green_to_red, green_to_blue, red_to_blue) per tile, signed or not."""
        return cls(
            bits, Pixels([Lit(0, r2b & 255, g2b & 255, g2r & 255) for g2r, g2b, r2b in multipliers])
        )


@dataclass
class SubtractGreen:
    pass


@dataclass
class ColourIndexing:
    palette: list[int]  # ARGB; stored as the differences of neighbours, as the format does
    stored: Pixels | None = None  # the palette sub-image as written (default: the differences)

    def sub_image(self) -> Pixels:
        if self.stored is not None:
            return self.stored
        out, last = [], 0
        for value in self.palette:
            out.append(_sub(value, last))
            last = value
        return Pixels.of_argb(out)

    @property
    def bits(self) -> int:
        return bundle_bits(len(self.palette))


def bundle_bits(colours: int) -> int:
    return 0 if colours > 16 else 1 if colours > 4 else 2 if colours > 2 else 3


def bundle(indices: list[list[int]], colours: int) -> list[list[int]]:
    """Rows of palette indices packed as the colour-indexing transform reads them:
    2**bits pixels per green byte, the first in the lowest bits."""
    bits = bundle_bits(colours)
    per, width = 1 << bits, 8 >> bits
    out = []
    for row in indices:
        packed = []
        for x in range(0, len(row), per):
            value = 0
            for i, index in enumerate(row[x : x + per]):
                if index >= 1 << width:
                    raise ValueError(f"index {index} does not fit in {width} bits")
                value |= index << (i * width)
            packed.append(value)
        out.append(packed)
    return out


# --------------------------------------------------------------------------- the image


@dataclass
class Image:
    width: int
    height: int
    pixels: Pixels
    transforms: list = field(default_factory=list)
    alpha: bool = False  # the header's alpha hint
    version: int = 0

    def vp8l(self) -> bytes:
        bits = Bits()
        bits.put(0x2F, 8)
        bits.put(self.width - 1, 14)
        bits.put(self.height - 1, 14)
        bits.put(int(self.alpha), 1)
        bits.put(self.version, 3)
        xsize = self.width
        for t in self.transforms:
            bits.put(1, 1)
            if isinstance(t, Predictor | CrossColour):
                bits.put(PREDICTOR if isinstance(t, Predictor) else CROSS_COLOUR, 2)
                bits.put(t.bits - 2, 3)
                sub = t.modes if isinstance(t, Predictor) else t.elements
                tiles = _sub_size(xsize, t.bits), _sub_size(self.height, t.bits)
                _write_pixels(bits, sub, tiles[0], False, tiles[1])
            elif isinstance(t, SubtractGreen):
                bits.put(SUBTRACT_GREEN, 2)
            else:
                bits.put(COLOUR_INDEXING, 2)
                bits.put(len(t.palette) - 1, 8)
                _write_pixels(bits, t.sub_image(), len(t.palette), False, 1)
                xsize = _sub_size(xsize, t.bits)
        bits.put(0, 1)
        _write_pixels(bits, self.pixels, xsize, True, self.height)
        return bits.bytes()

    def riff(self, **options) -> bytes:
        return riff(self.vp8l(), width=self.width, height=self.height, alpha=self.alpha, **options)

    def argb(self) -> list[int]:
        """The decoded ARGB pixels, row by row, by the specification."""
        xsizes, xsize = [], self.width
        for t in self.transforms:
            xsizes.append(xsize)
            if isinstance(t, ColourIndexing):
                xsize = _sub_size(xsize, t.bits)
        data = decode_symbols(self.pixels, xsize, self.height)
        for t, w in reversed(list(zip(self.transforms, xsizes, strict=True))):
            data = _inverse(t, data, w, self.height)
        return data

    def rgba(self) -> bytes:
        return b"".join(bytes((v >> 16 & 255, v >> 8 & 255, v & 255, v >> 24)) for v in self.argb())


def riff(
    payload: bytes,
    *,
    vp8x: bool = False,
    width: int = 1,
    height: int = 1,
    alpha: bool = False,
    chunk_size: int | None = None,
    riff_size: int | None = None,
    trailing: bytes = b"",
) -> bytes:
    """A still WebP file holding the VP8L `payload`: RIFF, [VP8X,] VP8L (padded
    to even). `chunk_size`/`riff_size` override the sizes written; `trailing`
    goes after the chunk (inside the RIFF size)."""
    size = len(payload) if chunk_size is None else chunk_size
    body = b"WEBP"
    if vp8x:
        flags = 0x10 if alpha else 0
        body += b"VP8X" + struct.pack("<IB3x", 10, flags)
        body += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body += b"VP8L" + struct.pack("<I", size) + payload + b"\0" * (len(payload) & 1) + trailing
    total = len(body) if riff_size is None else riff_size
    return b"RIFF" + struct.pack("<I", total) + body


# --------------------------------------------------------------------------- writing


def _sub_size(size: int, bits: int) -> int:
    return (size + (1 << bits) - 1) >> bits


def _green_symbol(s) -> int:
    if isinstance(s, Lit):
        return s.g
    if isinstance(s, Hit):
        return NUM_LITERALS + NUM_LENGTHS + s.key
    return NUM_LITERALS + prefix(s.length)[0]


def _group_at(pixels: Pixels, groups: list[int], xsize: int, pos: int) -> int:
    if pixels.meta is None:
        return 0
    bits = pixels.meta[0]
    y, x = divmod(pos, xsize)
    at = (y >> bits) * _sub_size(xsize, bits) + (x >> bits)
    return groups[at] if at < len(groups) else 0


def _groups(pixels: Pixels, xsize: int, ysize: int) -> list[int]:
    """The group numbers of the entropy image (its literals where it does not decode)."""
    if pixels.meta is None:
        return []
    bits, image = pixels.meta
    try:
        values = decode_symbols(image, _sub_size(xsize, bits), _sub_size(ysize, bits))
    except ValueError:
        values = [(s.r << 16) | (s.g << 8) for s in image.symbols if isinstance(s, Lit)]
    return [v >> 8 & 0xFFFF for v in values]


def _advance(s) -> int:
    return s.length if isinstance(s, Copy) else 1


def _write_pixels(
    bits: Bits, pixels: Pixels, xsize: int, level0: bool, ysize: int | None = None
) -> None:
    if pixels.cache_bits or pixels.cache_flag:
        bits.put(1, 1)
        bits.put(pixels.cache_bits, 4)
    else:
        bits.put(0, 1)
    if level0:
        if pixels.meta is None:
            bits.put(0, 1)
        else:
            precision, image = pixels.meta
            bits.put(1, 1)
            bits.put(precision - 2, 3)
            tiles = _sub_size(xsize, precision), _sub_size(ysize or 1, precision)
            _write_pixels(bits, image, tiles[0], False, tiles[1])
    # Which group each symbol is written with, and the symbols each code needs.
    groups = _groups(pixels, xsize, ysize or 1)
    placed, pos = [], 0
    for s in pixels.symbols:
        if not level0 and ysize is not None and pos >= xsize * ysize:
            raise ValueError("more symbols than the sub-image has pixels")
        placed.append((_group_at(pixels, groups, xsize, pos), s))
        pos += _advance(s)
    count = pixels.groups
    if count is None:  # as the decoder counts them: the largest in the entropy image
        count = max([0, *groups]) + 1
        count = max(count, len(pixels.codes or ()))
    used_symbols: dict[int, list[set[int]]] = {}
    for g, s in placed:
        if g >= count:
            continue
        need = used_symbols.setdefault(g, [set() for _ in range(5)])
        need[GREEN].add(_green_symbol(s))
        if isinstance(s, Lit):
            need[RED].add(s.r)
            need[BLUE].add(s.b)
            need[ALPHA].add(s.a)
        elif isinstance(s, Copy):
            need[DIST].add(prefix(s.code)[0])
    alphabets = (NUM_LITERALS + NUM_LENGTHS + (1 << pixels.cache_bits if pixels.cache_bits else 0),)
    alphabets += (NUM_LITERALS, NUM_LITERALS, NUM_LITERALS, NUM_DISTANCES)
    written, unused = [], (_UNUSED, _UNUSED.table())
    for g in range(count):
        given = pixels.codes[g] if pixels.codes and g < len(pixels.codes) else []
        given = [*given, *[None] * (5 - len(given))]
        codes = []
        for j in range(5):
            code = given[j]
            if code is None:
                code = _default_code(used_symbols[g][j]) if g in used_symbols else _UNUSED
            code.write(bits, alphabets[j])
            codes.append(unused if code is _UNUSED else (code, code.table()))
        written.append(codes)
    for g, s in placed:
        codes = written[g]

        def put(j, symbol, codes=codes):
            code, table = codes[j]
            code.write_symbol(bits, symbol, table)

        put(GREEN, _green_symbol(s))
        if isinstance(s, Lit):
            put(RED, s.r)
            put(BLUE, s.b)
            put(ALPHA, s.a)
        elif isinstance(s, Copy):
            _, n, extra = prefix(s.length)
            bits.put(extra, n)
            symbol, n, extra = prefix(s.code)
            put(DIST, symbol)
            bits.put(extra, n)


_UNUSED = Code.simple_of(0)


def _default_code(symbols: set[int]) -> Code:
    """One symbol under 256: the simple form; else a normal code (balanced)."""
    if not symbols:
        return _UNUSED
    if len(symbols) <= 2 and max(symbols) < NUM_LITERALS:
        return Code.simple_of(*sorted(symbols))
    return Code.of(symbols)


# --------------------------------------------------------------------------- the expected pixels


def decode_symbols(pixels: Pixels, xsize: int, ysize: int) -> list[int]:
    """ARGB values of an entropy-coded image's symbols (before transforms);
    ValueError where a copy reaches before the first pixel or past the last,
    or the symbols end before the image does."""
    total = xsize * ysize
    out: list[int] = []
    bits = pixels.cache_bits
    cache = [0] * (1 << bits) if bits else None
    for s in pixels.symbols:
        if len(out) >= total:
            break
        if isinstance(s, Lit):
            new = [(s.a << 24) | (s.r << 16) | (s.g << 8) | s.b]
        elif isinstance(s, Hit):
            new = [cache[s.key]]
        else:
            dist = plane_distance(s.code, xsize)
            if dist > len(out) or len(out) + s.length > total:
                raise ValueError(f"copy of {s.length} from {dist} back at pixel {len(out)}")
            start = len(out)
            for _ in range(s.length):
                out.append(out[-dist])
            new = out[start:]
        if not isinstance(s, Copy):
            out += new
        if cache is not None:
            for v in new:
                cache[cache_key(v, bits)] = v
    if len(out) < total:
        raise ValueError(f"{len(out)} of {total} pixels")
    return out


def _add(a: int, b: int) -> int:
    return (((a & 0xFF00FF00) + (b & 0xFF00FF00)) & 0xFF00FF00) | (
        ((a & 0x00FF00FF) + (b & 0x00FF00FF)) & 0x00FF00FF
    )


def _sub(a: int, b: int) -> int:
    return (((a | 0x00FF00FF) - (b & 0xFF00FF00)) & 0xFF00FF00) | (
        ((a | 0xFF00FF00) - (b & 0x00FF00FF)) & 0x00FF00FF
    )


def _channels(v: int) -> list[int]:
    return [v >> 24 & 255, v >> 16 & 255, v >> 8 & 255, v & 255]


def _pack(c: list[int]) -> int:
    return (c[0] << 24) | (c[1] << 16) | (c[2] << 8) | c[3]


def _avg(a: int, b: int) -> int:
    return _pack([(x + y) >> 1 for x, y in zip(_channels(a), _channels(b), strict=True)])


def _clip(v: int) -> int:
    return 0 if v < 0 else 255 if v > 255 else v


def _select(left: int, top: int, top_left: int) -> int:
    dl = sum(abs(t - c) for t, c in zip(_channels(top), _channels(top_left), strict=True))
    dt = sum(abs(left_ - c) for left_, c in zip(_channels(left), _channels(top_left), strict=True))
    return left if dl < dt else top


def _predict(mode: int, left: int, top: int, top_left: int, top_right: int) -> int:
    if mode == 1:
        return left
    if mode == 2:
        return top
    if mode == 3:
        return top_right
    if mode == 4:
        return top_left
    if mode == 5:
        return _avg(_avg(left, top_right), top)
    if mode == 6:
        return _avg(left, top_left)
    if mode == 7:
        return _avg(left, top)
    if mode == 8:
        return _avg(top_left, top)
    if mode == 9:
        return _avg(top, top_right)
    if mode == 10:
        return _avg(_avg(left, top_left), _avg(top, top_right))
    if mode == 11:
        return _select(left, top, top_left)
    if mode == 12:
        abc = zip(_channels(left), _channels(top), _channels(top_left), strict=True)
        return _pack([_clip(a + b - c) for a, b, c in abc])
    if mode == 13:
        ac = zip(_channels(_avg(left, top)), _channels(top_left), strict=True)
        return _pack([_clip(a + int((a - c) / 2)) for a, c in ac])
    return 0xFF000000  # 0, and 14 and 15 as libwebp reads them


def _inverse(t, data: list[int], width: int, height: int) -> list[int]:
    if isinstance(t, SubtractGreen):
        out = []
        for v in data:
            g = v >> 8 & 255
            out.append((v & 0xFF00FF00) | ((v >> 16 & 255) + g & 255) << 16 | ((v & 255) + g & 255))
        return out
    if isinstance(t, ColourIndexing):
        bits = t.bits
        palette = [0] * (1 << (8 >> bits))
        last = 0
        for i, v in enumerate(decode_symbols(t.sub_image(), len(t.palette), 1)):
            last = palette[i] = _add(v, last)
        per, mask = 1 << bits, (1 << (8 >> bits)) - 1
        packed_width = _sub_size(width, bits)
        out = []
        for y in range(height):
            row = data[y * packed_width : (y + 1) * packed_width]
            for x in range(width):
                green = row[x >> bits] >> 8 & 255
                out.append(palette[green >> ((x & (per - 1)) * (8 >> bits)) & mask])
        return out
    tiles = _sub_size(width, t.bits)
    if isinstance(t, Predictor):
        modes = decode_symbols(t.modes, tiles, _sub_size(height, t.bits))
        out = list(data)
        for y in range(height):
            for x in range(width):
                i = y * width + x
                if y == 0:
                    pred = 0xFF000000 if x == 0 else out[i - 1]
                elif x == 0:
                    pred = out[i - width]
                else:
                    mode = modes[(y >> t.bits) * tiles + (x >> t.bits)] >> 8 & 15
                    pred = _predict(
                        mode, out[i - 1], out[i - width], out[i - width - 1], out[i - width + 1]
                    )
                out[i] = _add(data[i], pred)
        return out
    elements = decode_symbols(t.elements, tiles, _sub_size(height, t.bits))
    out = []
    for i, v in enumerate(data):
        y, x = divmod(i, width)
        e = elements[(y >> t.bits) * tiles + (x >> t.bits)]
        g2r, g2b, r2b = e & 255, e >> 8 & 255, e >> 16 & 255
        green = _s8(v >> 8 & 255)
        red = ((v >> 16 & 255) + (_s8(g2r) * green >> 5)) & 255
        blue = ((v & 255) + (_s8(g2b) * green >> 5) + (_s8(r2b) * _s8(red) >> 5)) & 255
        out.append((v & 0xFF00FF00) | red << 16 | blue)
    return out


def _s8(v: int) -> int:
    return v - 256 if v > 127 else v


# --------------------------------------------------------------------------- the reference decoder


def libwebp_rgba(data: bytes) -> tuple[int, int, bytes] | None:
    """(width, height, RGBA) as libwebp's WebPDecode gives them (the service's
    own call, app.engine.webp), or None where it refuses the file."""
    import numpy as np

    from app.engine import webp

    lib = webp._library()
    data = bytes(data)
    found = webp._Features()
    if lib.WebPGetFeaturesInternal(data, len(data), found, webp._ABI) != 0:
        return None
    if found.has_animation or found.width <= 0 or found.height <= 0:
        return None
    band = np.empty((found.height, found.width, 4), np.uint8)
    if webp._decode_into(lib, data, band, 0) != 0:
        return None
    return found.width, found.height, band.tobytes()


# Three pixels whose green, red, blue and alpha codes take each form below.
CODE_FORM_PIXELS = [Lit(255, 7, 1, 9), Lit(255, 7, 0, 9), Lit(255, 7, 1, 9)]


def code_forms() -> list[list]:
    """Codes for green, red, blue, alpha (None: the writer's own) in each form the
    format has, for CODE_FORM_PIXELS: simple ones of one or two symbols, 1-bit or
    8-bit first; normal ones with max_symbol, 256 lengths of 8, 4 of 2."""
    return [
        # simple: two symbols with a 1-bit first, one 8-bit symbol
        [Code.simple_of(0, 1), Code.simple_of(7), Code.simple_of(9), Code.simple_of(255)],
        # simple: an 8-bit first symbol (the larger first), a symbol twice (one symbol)
        [Code.simple_of(1, 0, wide=True), Code.simple_of(7, 7), None, None],
        # normal: max_symbol, a code of 256 lengths of 8, of 4 lengths of 2
        [Code.of([0, 1], max_symbol=True), Code.of([7, 200]), Code.of([9], max_symbol=True)],
        [Code({0: 2, 1: 2, 2: 2, 3: 2}), Code({s: 8 for s in range(256)}), None, None],
    ]
