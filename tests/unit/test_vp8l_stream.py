"""The streaming VP8L decoder (app/engine/vp8l.py, native/vp8l.c) against
libwebp, on the same bytes: it refuses exactly what WebPDecode refuses, and
where both decode, the pixels are the same. The streams come from the VP8L
writer (tests/support/vp8l_writer.py: each feature and boundary stated) and
from Pillow's encoder (what real files hold). The library is built by
scripts/test.sh: without it these tests fail, they are not skipped."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from PIL import Image as PILImage

from app.engine import vp8l
from app.engine.png_strips import BadData
from tests.support import images
from tests.support import vp8l_writer as w
from tests.support.vp8l_writer import (
    Code,
    ColourIndexing,
    Copy,
    CrossColour,
    Hit,
    Image,
    Lit,
    Pixels,
    Predictor,
    SubtractGreen,
)


@pytest.fixture(autouse=True)
def _built():
    assert vp8l.available(), "libvp8l.so missing or stale: run scripts/build_native.sh"


def ours(data: bytes) -> tuple[int, int, bytes] | None:
    try:
        width, height, rgba = vp8l.decode_rgba(data)
    except BadData:
        return None
    return width, height, bytes(rgba)


def same(data: bytes) -> tuple[int, int, bytes] | None:
    """Our decoder and libwebp agree on `data`; libwebp's result (None: refused)."""
    reference = w.libwebp_rgba(data)
    found = ours(data)
    if reference is None:
        assert found is None, "decoded what libwebp refuses"
    else:
        assert found is not None, "refused what libwebp decodes"
        assert found[:2] == reference[:2]
        if found[2] != reference[2]:
            diff = np.flatnonzero(
                np.frombuffer(found[2], np.uint8) != np.frombuffer(reference[2], np.uint8)
            )
            pytest.fail(f"pixels differ from byte {diff[0]} ({len(diff)} bytes)")
    return reference


def decoded(im: Image, **riff) -> bool:
    """Both decoders agree on the image's file, and libwebp on the writer's
    model of it: True decoded, False refused."""
    result = same(im.riff(**riff))
    try:
        expected = im.rgba()
    except ValueError:
        assert result is None
        return False
    assert result == (im.width, im.height, expected)
    return True


def _random(n: int, seed: int, opaque: bool = False) -> list[int]:
    rng = random.Random(seed)
    return [rng.getrandbits(32) | (0xFF000000 if opaque else 0) for _ in range(n)]


def _lits(values) -> list:
    return [Lit.argb(v) for v in values]


def _image(width: int, height: int, seed: int = 0, **options) -> Image:
    return Image(width, height, Pixels.of_argb(_random(width * height, seed)), **options)


def _fill(count: int, code: int = 2) -> list[Copy]:
    """Copies of `count` pixels in all (4096 at most each), by distance code `code`."""
    return [Copy(min(4096, count - i), code) for i in range(0, count, 4096)]


# --------------------------------------------------------------------------- the container


def test_the_library_is_built():
    assert vp8l.available()


def test_stream_runs_from_the_vp8l_payload_to_the_end_of_the_file():
    payload = _image(3, 2).vp8l()
    simple = w.riff(payload, trailing=b"tail")
    assert bytes(vp8l.stream(simple)) == payload + b"\0" * (len(payload) & 1) + b"tail"
    extended = w.riff(payload, vp8x=True, width=3, height=2)
    assert bytes(vp8l.stream(extended)) == extended[12 + 18 + 8 :]
    assert vp8l.stream(images.encode(images.photo(16, 16, 1), "WEBP", quality=80)) is None


@pytest.mark.parametrize("vp8x", [False, True])
@pytest.mark.parametrize("alpha", [False, True])
def test_both_file_forms_and_the_alpha_hint(vp8x, alpha):
    assert decoded(_image(5, 3, alpha=alpha), vp8x=vp8x)


@pytest.mark.parametrize(("width", "height"), [(1, 1), (1, 9), (9, 1), (16384, 1), (1, 16384)])
def test_sizes_at_the_header_limits(width, height):
    im = Image(width, height, Pixels([Lit(255, 1, 2, 3), *_fill(width * height - 1)]))
    assert decoded(im)


def test_header_fields_libwebp_refuses():
    payload = bytearray(_image(3, 2).vp8l())
    assert same(w.riff(bytes(payload))) is not None
    assert same(_image(3, 2, version=1).riff()) is None
    payload[0] = 0x2E  # not the signature
    assert same(w.riff(bytes(payload))) is None
    # a VP8X canvas other than the image
    assert same(w.riff(_image(3, 2).vp8l(), vp8x=True, width=3, height=3)) is None


@pytest.mark.parametrize("size", range(8))
def test_a_stream_under_8_bytes(size):
    payload = _image(30, 20).vp8l()[:size]
    assert same(w.riff(payload)) is None


def test_the_smallest_streams():
    # 1x1 with 1-bit simple codes: 63 bits, 8 bytes; the bit reader's first
    # fill takes 8 bytes, cut ones too.
    for argb in (0x01000101, 0x00010000, 0x01010101):
        payload = Image(1, 1, Pixels([Lit.argb(argb)])).vp8l()
        assert len(payload) == 8
        assert same(w.riff(payload)) == (1, 1, Image(1, 1, Pixels([Lit.argb(argb)])).rgba())
        for cut in range(8):
            same(w.riff(payload[:cut]))
            same(w.riff(payload[:cut] + b"\0" * (8 - cut)))
    one = Image(1, 1, Pixels([Lit.argb(0x01000101)]))
    cut = w.riff(one.vp8l()[:7])  # bits 56-62 hold a 1 (the alpha code's symbol)
    assert same(cut) is None


def test_trailing_bytes_after_the_chunk():
    im = _image(7, 5, 3)
    assert decoded(im, trailing=b"\xff" * 9)
    assert decoded(im, trailing=b"EXIF\x04\0\0\0abcd")
    assert same(im.riff() + b"\x00\xff\x00junk past the RIFF size") is not None


def test_chunk_size_edits():
    payload = _image(7, 5, 3).vp8l()
    for size in [0, 1, 4, 5, len(payload) - 1, len(payload), len(payload) + 1, 1 << 31]:
        same(w.riff(payload, chunk_size=size))
        same(w.riff(payload, chunk_size=size, trailing=b"\0" * 8))
    for size in [0, 4, 12, 20, 1 << 30]:
        same(w.riff(payload, riff_size=size))


# --------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("mode", range(16))
def test_each_predictor_mode(mode):
    width, height = 13, 11  # 4 x 3 tiles of 4: a last tile column 1 px wide
    assert decoded(_image(width, height, mode, transforms=[Predictor.of(2, [mode] * 12)]))


@pytest.mark.parametrize("bits", range(2, 10))
def test_predictor_tile_sizes_with_mixed_modes(bits):
    width, height = 37, 23
    rng = random.Random(bits)
    tiles = w._sub_size(width, bits) * w._sub_size(height, bits)
    predictor = Predictor.of(bits, [rng.randrange(16) for _ in range(tiles)])
    assert decoded(_image(width, height, bits, transforms=[predictor]))


def test_predictor_mode_byte_uses_green_only():
    # The mode is green & 15: other channels and green's high bits are ignored.
    modes = Pixels([Lit(0xAB, 0xCD, 0xF0 | m, 0xEF) for m in (3, 11, 13, 15)])
    assert decoded(_image(8, 8, 1, transforms=[Predictor(2, modes)]))


@pytest.mark.parametrize("seed", range(4))
def test_cross_colour_multipliers(seed):
    rng = random.Random(seed)
    width, height = 19, 9
    tiles = w._sub_size(width, 2) * w._sub_size(height, 2)
    multipliers = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(tiles)]
    if seed == 0:
        multipliers[0], multipliers[1] = (127, 128, 255), (128, 127, 1)  # extremes
    assert decoded(_image(width, height, seed, transforms=[CrossColour.of(2, multipliers)]))


def test_subtract_green():
    assert decoded(_image(9, 4, 2, transforms=[SubtractGreen()]))


def _indexed(width: int, height: int, colours: int, seed: int) -> Image:
    rng = random.Random(seed)
    indices = [[rng.randrange(colours) for _ in range(width)] for _ in range(height)]
    packed = w.bundle(indices, colours)
    pixels = Pixels([Lit(0, 0, g, 0) for row in packed for g in row])
    return Image(width, height, pixels, [ColourIndexing(_random(colours, seed))])


@pytest.mark.parametrize("colours", [1, 2, 3, 4, 5, 16, 17, 255, 256])
@pytest.mark.parametrize("width", range(1, 18))
def test_colour_indexing_bundles_every_width(colours, width):
    assert decoded(_indexed(width, 3, colours, colours * 31 + width))


@pytest.mark.parametrize("colours", [1, 3, 5, 17, 255])
def test_colour_indexing_past_the_palette(colours):
    # Every byte value in the packed green: indices past the palette are transparent black.
    bits = w.bundle_bits(colours)
    width = 256 << bits
    im = Image(width, 1, Pixels([Lit(0, 0, g, 0) for g in range(256)]))
    im.transforms = [ColourIndexing(_random(colours, 4))]
    assert decoded(im)
    assert im.argb()[-1] == 0


def test_colour_indexing_packed_pixels_keep_their_other_channels_ignored():
    im = _indexed(9, 2, 4, 5)
    im.pixels.symbols = [Lit(0x12, 0x34, s.g, 0x56) for s in im.pixels.symbols]
    assert decoded(im)


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_transforms_in_every_order(order):
    width, height = 11, 7
    rng = random.Random(sum(o * 4**i for i, o in enumerate(order)))
    xsize, transforms = width, []
    for kind in order:
        tiles = w._sub_size(xsize, 2) * w._sub_size(height, 2)
        if kind == 0:
            transforms.append(Predictor.of(2, [rng.randrange(16) for _ in range(tiles)]))
        elif kind == 1:
            elements = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(tiles)]
            transforms.append(CrossColour.of(2, elements))
        elif kind == 2:
            transforms.append(SubtractGreen())
        else:
            transforms.append(ColourIndexing(_random(6, 7)))  # 2 px a byte from here on
            xsize = w._sub_size(xsize, 1)
    im = Image(width, height, Pixels.of_argb(_random(xsize * height, 8)), transforms)
    assert decoded(im)


@pytest.mark.parametrize("kind", range(4))
def test_a_transform_twice_is_refused(kind):
    one = [Predictor.of(2, [1]), CrossColour.of(2, [(1, 2, 3)]), SubtractGreen()]
    one.append(ColourIndexing([0xFF00FF00, 0xFF0000FF, 0xFFFF0000, 0xFF000000, 0]))
    other = one[(kind + 1) % 3]
    for transforms in ([one[kind], one[kind]], [one[kind], other, one[kind]]):
        assert same(_image(4, 4, 1, transforms=transforms).riff()) is None


# --------------------------------------------------------------------------- cache, meta codes


@pytest.mark.parametrize("bits", range(1, 12))
def test_colour_cache_hits(bits):
    rng = random.Random(bits)
    values = _random(40, bits)
    symbols = _lits(values)
    for _ in range(60):
        symbols.append(Hit(rng.randrange(1 << bits)))
    symbols += [Copy(8, 2), Hit(0), Hit((1 << bits) - 1)]
    assert decoded(Image(110, 1, Pixels(symbols, cache_bits=bits)))


@pytest.mark.parametrize("bits", [0, 12, 15])
def test_colour_cache_bits_out_of_range(bits):
    im = Image(2, 1, Pixels(_lits(_random(2, 1)), cache_bits=bits, cache_flag=True))
    assert same(im.riff()) is None


def test_colour_cache_with_transforms_and_in_sub_images():
    width, height = 13, 6
    modes = Pixels([Lit(0, 0, m, 0) for m in (11, 12, 13, 11, 1, 2, 3, 4)], cache_bits=2)
    symbols = _lits(_random(width * 2, 3)) + [Hit(k % 8) for k in range(width * 4)]
    im = Image(width, height, Pixels(symbols, cache_bits=3), [Predictor(2, modes)])
    assert decoded(im)


@pytest.mark.parametrize(("precision", "groups"), [(2, 1), (2, 7), (3, 40), (5, 3), (9, 2)])
def test_meta_prefix_codes(precision, groups):
    width, height = 61, 35
    rng = random.Random(precision * groups)
    tiles = w._sub_size(width, precision) * w._sub_size(height, precision)
    image = w.group_image([rng.randrange(groups) for _ in range(tiles)])
    symbols = [*_lits(_random(width * 3, 2)), Copy(width * (height - 3), 1)]
    assert decoded(Image(width, height, Pixels(symbols, meta=(precision, image))))


def test_meta_codes_with_group_numbers_libwebp_remaps():
    # Over 1000 groups, or more than the entropy image's pixels: libwebp reads
    # every group's codes but keeps only those used.
    width, height = 8, 4
    symbols = _lits(_random(width * height, 6))
    for groups in ([0, 1500], [1001, 3], [5, 5], [0, 65535]):
        image = w.group_image(groups)
        assert decoded(Image(width, height, Pixels(symbols, meta=(2, image))))
    # An unused group's codes must still be valid.
    bad = Code({0: 1, 1: 2})  # incomplete
    pixels = Pixels(symbols, meta=(2, w.group_image([0, 2])), codes=[[], [bad], []])
    assert same(Image(width, height, pixels).riff()) is None


def test_meta_codes_in_thousands_of_groups():
    # More than libwebp's encoder writes (MAX_HUFF_IMAGE_SIZE, 2,600), all used.
    width, height = 256, 176  # 2,816 blocks of 4x4, each its own group
    rng = random.Random(2)
    symbols = _lits(rng.getrandbits(32) for _ in range(width * height))
    image = w.group_image(list(range(64 * 44)))
    assert decoded(Image(width, height, Pixels(symbols, meta=(2, image))))


def test_meta_group_image_with_a_cache_and_copies():
    width, height = 32, 16
    image = Pixels([Lit(0, 0, g, 0) for g in (0, 1, 2, 3)] + [Copy(4, 4)], cache_bits=1)
    symbols = [*_lits(_random(width, 3)), Copy(width * (height - 1), 1)]
    assert decoded(Image(width, height, Pixels(symbols, meta=(3, image))))


# --------------------------------------------------------------------------- prefix codes


def test_prefix_code_forms():
    forms = [
        *w.code_forms(),
        [Code({0: 1, 1: 1}, max_symbol=280), Code({0: 1, 7: 15} | _deep(7))],
    ]
    for codes in forms:
        assert decoded(Image(3, 1, Pixels(w.CODE_FORM_PIXELS, codes=[codes])))
    one = [Lit(255, 7, 1, 9)] * 3
    assert decoded(Image(3, 1, Pixels(one, codes=[[Code.simple_of(1, wide=False)]])))


def _deep(skip: int) -> dict[int, int]:
    """Lengths 2..15 and a second 15 for symbols other than `skip` and 0: a
    complete code 15 bits deep (with 0: 1 and skip: 15)."""
    others = [s for s in range(1, 256) if s != skip]
    return {others[i]: i + 2 for i in range(13)} | {others[13]: 15}


def test_a_code_15_bits_deep():
    lengths = {0: 1, 7: 15} | _deep(7)
    assert sum(2.0**-n for n in lengths.values()) == 1
    values = [0xFF000000 | (s << 16) for s in lengths]
    pixels = Pixels(_lits(values), codes=[[None, Code(lengths)]])
    assert decoded(Image(len(values), 1, pixels))


@pytest.mark.parametrize(
    "code",
    [
        Code({0: 1, 1: 2}),  # incomplete
        Code({0: 1, 1: 1, 2: 1}),  # over-subscribed
        Code({0: 1, 1: 1}, tokens=[(0, 0)] * 280),  # no symbol at all
        Code({0: 1, 1: 1}, max_symbol=281),  # max_symbol past the alphabet
        Code({0: 1, 1: 1}, tokens=[(1, 0), (1, 0), (18, 127), (18, 127), (17, 0)]),  # 3 past
        Code(  # an incomplete code-length code
            {0: 1, 1: 1},
            tokens=[(1, 0), (1, 0), (18, 127), (18, 118), (18, 0)],
            length_lengths={1: 1, 18: 2},
        ),
        Code({0: 1, 1: 1}, tokens=[(16, 0)] * 93 + [(0, 0)], max_symbol=94),  # 16 repeats 8: 279
    ],
)
def test_codes_libwebp_refuses(code):
    pixels = Pixels([Lit(255, 7, 1, 9), Lit(255, 7, 0, 9)], codes=[[code]])
    assert same(Image(2, 1, pixels).riff()) is None


def test_repeat_codes_16_17_18():
    eights = [(16, 3)] * 42 + [(8, 0)] * 4  # 16 before any length repeats 8
    zeros = [(1, 0), (18, 127), (18, 50), (1, 0), (17, 7), (18, 34)]
    codes = [None, Code({s: 8 for s in range(256)}, tokens=eights)]
    codes.append(Code({0: 1, 200: 1}, tokens=zeros))
    symbols = [Lit(255, 1, 2, 0), Lit(255, 4, 5, 200)]
    assert decoded(Image(2, 1, Pixels(symbols, codes=[codes])))


@pytest.mark.parametrize("max_symbol", [2, 3, 4, 5, 17, 18, 255, 256, 257, 280])
def test_max_symbol_field_widths(max_symbol):
    # max_symbol counts the tokens read (2 + up to 16 bits): past the tokens
    # written, the decoder reads the pixels as code lengths.
    code = Code({0: 1, 1: 1}, tokens=[(1, 0), (1, 0)] + [(0, 0)] * 278, max_symbol=max_symbol)
    symbols = [Lit(255, 7, 1, 9), Lit(255, 7, 0, 9)]
    same(Image(2, 1, Pixels(symbols, codes=[[code]])).riff())


# --------------------------------------------------------------------------- pixel symbols


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 64, 65, 3072, 3073, 4096])
def test_copy_lengths(length):
    width = 64
    height = (length + 10 + width - 1) // width + 1
    symbols = [*_lits(_random(10, length)), Copy(length, 2)]
    symbols += _lits(_random(width * height - 10 - length, 1))
    assert decoded(Image(width, height, Pixels(symbols)))


@pytest.mark.parametrize("width", [1, 2, 3, 7, 8, 9, 16, 100])
def test_every_plane_code(width):
    # On narrow images many plane codes give a distance under 1 (then 1).
    height = 900 // width + 1
    outcomes = set()
    for code in range(1, 121):
        symbols = [*_lits(_random(width * 8 + 8, code)), Copy(20, code)]
        symbols += [Copy(width * height - width * 8 - 28, 1)]
        outcomes.add(decoded(Image(width, height, Pixels(symbols))))
    assert True in outcomes


def test_raw_distances():
    values = _random(300, 3)
    for distance in [1, 2, 3, 4, 5, 119, 120, 121, 255, 256, 257, 300]:
        im = Image(30, 20, Pixels([*_lits(values), Copy.raw(300, distance)]))
        assert decoded(im)


def test_a_copy_ending_at_the_last_pixel_and_one_past():
    width, height = 9, 5
    head = _lits(_random(10, 4))
    assert decoded(Image(width, height, Pixels([*head, Copy(width * height - 10, 2)])))
    assert not decoded(Image(width, height, Pixels([*head, Copy(width * height - 9, 2)])))


def test_a_distance_of_the_pixels_so_far_and_one_more():
    head = _lits(_random(37, 5))
    assert decoded(Image(10, 10, Pixels([*head, Copy.raw(63, 37)])))
    assert not decoded(Image(10, 10, Pixels([*head, Copy.raw(63, 38)])))
    # a plane code: (0, 1) is the pixel above, one row back
    assert decoded(Image(37, 2, Pixels([*head, Copy(37, 1)])))
    assert not decoded(Image(38, 2, Pixels([*head, Copy(39, 1)])))


@pytest.mark.parametrize("start", [w.MAX_DISTANCE, w.MAX_DISTANCE - 1])
def test_the_largest_raw_distance(start):
    # 1,048,456 back: ok from that pixel on, refused one pixel earlier.
    width, height = 1024, 1030
    values = _random(4096, 9)
    symbols = _lits(values)
    filled = len(values)
    while filled < start:
        step = min(4096, start - filled)
        symbols.append(Copy(step, 2 if filled % 2 else 1))
        filled += step
    symbols.append(Copy.raw(4096, w.MAX_DISTANCE))
    symbols += _fill(width * height - filled - 4096, 1)
    im = Image(width, height, Pixels(symbols))
    assert decoded(im) is (start == w.MAX_DISTANCE)
    if start == w.MAX_DISTANCE:  # the window, read out 7 rows at a time
        expected = np.frombuffer(im.rgba(), np.uint8).reshape(height, width, 4)
        assert np.array_equal(_rows(im.riff(), 4, 7), expected)


def test_the_largest_raw_distance_when_the_window_has_moved():
    # Past twice the window the decoder drops what no copy can reach: every
    # copy from there on reaches back the farthest, right after each move too.
    # Rows not yet handed out stay even when a batch is longer than the window
    # (2,441 rows: the first move comes 2.1 M pixels into the second batch).
    width, height = 1024, 4700
    rng = random.Random(5)
    symbols, filled = [], 0
    while filled < w.MAX_DISTANCE:
        symbols += _lits(_random(64, filled))
        filled += 64
        step = min(4096, w.MAX_DISTANCE - filled)
        symbols.append(Copy.raw(step, rng.randrange(1, filled + 1)))
        filled += step
    symbols += [Copy.raw(4096, w.MAX_DISTANCE)] * ((width * height - filled) // 4096)
    filled += (width * height - filled) // 4096 * 4096
    symbols.append(Copy.raw(width * height - filled, w.MAX_DISTANCE))
    data = Image(width, height, Pixels(symbols)).riff()
    width, height, rgba = same(data)
    expected = np.frombuffer(rgba, np.uint8).reshape(height, width, 4)
    assert np.array_equal(_rows(data, 4, 7), expected)
    assert np.array_equal(_rows(data, 4, 1, max_rows=1), expected)
    assert np.array_equal(_rows(data, 3, 2441), expected[:, :, :3])


def test_the_largest_plane_distance_on_the_widest_image():
    width, height = 16384, 9
    symbols = _lits(_random(200, 1)) + _fill(28 * 4096)
    filled = 200 + 28 * 4096
    symbols.append(Copy(16, 120))  # 7 rows and 8 pixels back
    symbols += _fill(width * height - filled - 16, 1)
    im = Image(width, height, Pixels(symbols))
    assert decoded(im)
    expected = np.frombuffer(im.rgba(), np.uint8).reshape(height, width, 4)[:, :, :3]
    assert np.array_equal(_rows(im.riff(), 3, 1), expected)


def test_symbols_ending_before_the_image_does():
    assert not decoded(Image(4, 4, Pixels(_lits(_random(15, 1)))))


def test_a_trivial_code_reads_no_bits():
    # One symbol in each of green, red, blue, alpha: every pixel without a bit.
    im = Image(300, 200, Pixels([Lit(255, 10, 20, 30)]))
    assert len(im.vp8l()) < 20
    im.pixels.symbols *= 300 * 200
    assert decoded(im)


# --------------------------------------------------------------------------- truncation


def _small_stream() -> Image:
    width, height = 12, 7
    rng = random.Random(11)
    modes = [rng.randrange(16) for _ in range(w._sub_size(width, 2) * w._sub_size(height, 2))]
    symbols = [*_lits(_random(30, 11)), Hit(3), Copy(9, 1), Copy.raw(5, 30), Hit(1)]
    symbols += _lits(_random(width * height - 46, 12))
    pixels = Pixels(symbols, cache_bits=2, meta=(2, w.group_image([0, 1, 1, 0, 1, 0])))
    return Image(width, height, pixels, [SubtractGreen(), Predictor.of(2, modes)], alpha=True)


def test_truncated_at_every_byte():
    im = _small_stream()
    assert decoded(im)
    payload = im.vp8l()
    whole = im.riff()
    for cut in range(len(whole)):
        same(whole[:cut])
    outcomes = [same(w.riff(payload[:cut])) is not None for cut in range(len(payload) + 1)]
    assert outcomes[-1]
    assert not any(outcomes[:-2])  # the last byte's high bits may be padding


def test_zero_bits_past_a_truncated_stream():
    # libwebp reads zeros past the end but refuses the stream once it needed them.
    im = _small_stream()
    payload = im.vp8l()
    for cut in range(len(payload) - 3, len(payload) + 1):
        same(w.riff(payload[:cut] + b"\0" * 16))


# --------------------------------------------------------------------------- rows


def _rows(data: bytes, bands: int, count: int, max_rows: int | None = None) -> np.ndarray:
    """The image read through Decoder.rows(count), checking each call's row count."""
    width, height, _ = w.libwebp_rgba(data)
    out = []
    with vp8l.Decoder(vp8l.stream(data), width, height, bands, max_rows or count) as decoder:
        while sum(len(rows) for rows in out) < height:
            rows = decoder.rows(count)
            assert rows.shape == (min(count, height - sum(len(r) for r in out)), width, bands)
            out.append(np.array(rows))
    return np.concatenate(out)


@pytest.mark.parametrize("bands", [3, 4])
@pytest.mark.parametrize("count", [1, 2, 7, 23])
def test_rows_in_every_band_size(bands, count):
    width, height = 12, 23
    symbols = [*_lits(_random(width * 4, 6)), Hit(1), Copy(30, 1), Copy.raw(5, 40), Hit(2)]
    symbols += _lits(_random(width * height - width * 4 - 37, 7))
    modes = Predictor.of(3, [1, 11, 13, 12, 2, 5])
    im = Image(width, height, Pixels(symbols, cache_bits=3), [SubtractGreen(), modes])
    assert decoded(im)
    data = im.riff()
    width, height, rgba = w.libwebp_rgba(data)
    expected = np.frombuffer(rgba, np.uint8).reshape(height, width, 4)[:, :, :bands]
    assert np.array_equal(_rows(data, bands, count), expected)
    assert np.array_equal(_rows(data, bands, count, max_rows=23), expected)


def test_rows_of_a_truncated_stream_fail():
    data = _small_stream().riff()
    cut = w.riff(bytes(vp8l.stream(data))[:40])
    assert same(cut) is None
    with pytest.raises(BadData), vp8l.Decoder(vp8l.stream(cut), 12, 7, 4, 1) as decoder:
        for _ in range(7):
            decoder.rows(1)


# --------------------------------------------------------------------------- real encoder output


def _photo(width, height, seed):
    return images.photo(width, height, seed)


def _palette(width, height, seed):
    return images.screenshot(width, height, seed).quantize(12).convert("RGB")


def _alpha(width, height, seed):
    return images.cutout(width, height, seed)


def _screenshot(width, height, seed):
    return images.screenshot(width, height, seed)


def _transparent_palette(width, height, seed):
    im = images.screenshot(width, height, seed).quantize(3).convert("RGBA")
    alpha = PILImage.new("L", (width, height), 255)
    alpha.paste(0, (0, 0, width // 2, height))
    im.putalpha(alpha)
    return im


SOURCES = [_photo, _screenshot, _palette, _alpha, _transparent_palette]


@pytest.mark.parametrize("method", range(7))
@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.__name__.strip("_"))
def test_pillow_lossless_output(method, source):
    im = source(131, 67, method)
    for quality, exact in [(0, False), (50, True), (100, False)]:
        data = images.encode(im, "WEBP", lossless=True, method=method, quality=quality, exact=exact)
        assert vp8l.stream(data) is not None
        assert same(data) is not None


@pytest.mark.parametrize(
    ("source", "method"), [(_screenshot, 0), (_screenshot, 4), (_alpha, 0), (_photo, 1)]
)
def test_pillow_output_past_the_window(source, method):
    # 3.3 MP: the decoder's window moves (twice the farthest reach and a band)
    # while real references, far ones included, still point into it.
    data = images.encode(source(2048, 1600, 9), "WEBP", lossless=True, method=method, quality=40)
    width, height, rgba = same(data)
    expected = np.frombuffer(rgba, np.uint8).reshape(height, width, 4)
    assert np.array_equal(_rows(data, 4, 64), expected)
