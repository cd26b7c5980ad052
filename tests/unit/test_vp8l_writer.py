"""The VP8L writer (tests/support/vp8l_writer.py) against libwebp: what it
writes, libwebp decodes to the pixels the writer's model of the specification
says, and refuses where the model refuses. The decoder tests
(test_vp8l_stream.py) rest on this."""

from __future__ import annotations

import random

import pytest

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


def _random(n: int, seed: int, opaque: bool = False) -> list[int]:
    rng = random.Random(seed)
    return [rng.getrandbits(32) | (0xFF000000 if opaque else 0) for _ in range(n)]


def decodes_as_stated(im: Image, **riff) -> bool:
    """libwebp's pixels are the model's (True), or both refuse (False)."""
    found = w.libwebp_rgba(im.riff(**riff))
    try:
        expected = im.rgba()
    except ValueError:
        expected = None
    if expected is None:
        assert found is None
        return False
    assert found == (im.width, im.height, expected)
    return True


def test_bits_go_least_significant_first():
    bits = w.Bits()
    bits.put(1, 1)
    bits.put(0b10, 2)
    bits.put(0x1F, 5)
    assert bits.bytes() == bytes([0b11111101])
    with pytest.raises(ValueError):
        bits.put(4, 2)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[(1, (0, 0, 0)), (4, (3, 0, 0)), (5, (4, 1, 0)), (6, (4, 1, 1)), (7, (5, 1, 0))],
        *[(4096, (23, 10, 1023)), (1 << 20, (39, 18, (1 << 18) - 1))],
    ],
)
def test_prefix_coding_of_lengths_and_distances(value, expected):
    assert w.prefix(value) == expected


def test_plane_codes_as_libwebp_maps_them():
    assert w.plane_distance(1, 100) == 100  # (0, 1): the pixel above
    assert w.plane_distance(2, 100) == 1  # (1, 0): the pixel to the left
    assert w.plane_distance(120, 100) == 7 * 100 + 8
    assert w.plane_distance(121, 100) == 1
    assert w.plane_distance(4, 1) == 1  # (-1, 1) on a 1-px-wide image: 0, raised to 1


def test_the_header_and_both_riff_forms():
    im = Image(3, 2, Pixels.of_argb(_random(6, 1)), alpha=True)
    assert decodes_as_stated(im)
    assert decodes_as_stated(im, vp8x=True)
    assert decodes_as_stated(im, trailing=b"\x00junk")
    assert w.libwebp_rgba(Image(3, 2, im.pixels, version=1).riff()) is None


@pytest.mark.parametrize("mode", range(16))
def test_each_predictor_mode(mode):
    width, height = 13, 11  # 4 x 3 tiles of 4: a last tile column 1 px wide
    im = Image(width, height, Pixels.of_argb(_random(width * height, mode)))
    im.transforms = [Predictor.of(2, [mode] * 12)]
    assert decodes_as_stated(im)


@pytest.mark.parametrize("bits", [2, 3, 9])
def test_predictor_tile_sizes(bits):
    width, height = 21, 19
    tiles = w._sub_size(width, bits) * w._sub_size(height, bits)
    rng = random.Random(bits)
    im = Image(width, height, Pixels.of_argb(_random(width * height, bits)))
    im.transforms = [Predictor.of(bits, [rng.randrange(16) for _ in range(tiles)])]
    assert decodes_as_stated(im)


def test_cross_colour_subtract_green_and_their_order():
    width, height = 13, 11
    rng = random.Random(5)
    multipliers = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(12)]
    modes = [rng.randrange(16) for _ in range(12)]
    pixels = Pixels.of_argb(_random(width * height, 5))
    orders = [
        [CrossColour.of(2, multipliers)],
        [SubtractGreen()],
        [SubtractGreen(), Predictor.of(2, modes), CrossColour.of(2, multipliers)],
        [CrossColour.of(2, multipliers), SubtractGreen(), Predictor.of(2, modes)],
    ]
    for transforms in orders:
        assert decodes_as_stated(Image(width, height, pixels, transforms))


def test_a_transform_twice_is_refused():
    im = Image(2, 2, Pixels.of_argb(_random(4, 1)), [SubtractGreen(), SubtractGreen()])
    assert w.libwebp_rgba(im.riff()) is None


@pytest.mark.parametrize("colours", [1, 2, 3, 4, 5, 16, 17, 256])
@pytest.mark.parametrize("width", [1, 7, 8, 9, 17])
def test_colour_indexing_bundles(colours, width):
    rng = random.Random(colours * 100 + width)
    indices = [[rng.randrange(colours) for _ in range(width)] for _ in range(3)]
    packed = w.bundle(indices, colours)
    im = Image(width, 3, Pixels([Lit(0, 0, g, 0) for row in packed for g in row]))
    im.transforms = [ColourIndexing(_random(colours, colours))]
    assert decodes_as_stated(im)


def test_colour_indexing_past_the_palette_is_transparent_black():
    palette = [0xFF102030, 0xFF405060, 0xFF708090]
    im = Image(4, 1, Pixels([Lit(0, 0, 0b11100100, 0)]), [ColourIndexing(palette)])
    assert decodes_as_stated(im)
    assert im.argb() == [*palette, 0]


@pytest.mark.parametrize("bits", range(1, 12))
def test_colour_cache_hits(bits):
    values = _random(6, bits)
    symbols = [Lit.argb(v) for v in values]
    symbols += [Hit(w.cache_key(values[i], bits)) for i in (0, 3, 5, 2)]
    im = Image(10, 1, Pixels(symbols, cache_bits=bits))
    assert decodes_as_stated(im)
    assert im.argb()[6] == values[0] or bits < 4  # a few bits: later values share its key
    assert im.argb()[7] == values[3] or bits < 4


def test_meta_prefix_codes():
    width, height = 13, 11
    rng = random.Random(3)
    pixels = Pixels.of_argb(_random(width * height, 3)).symbols
    for precision, groups in [(2, 5), (3, 2), (9, 1)]:
        tiles = w._sub_size(width, precision) * w._sub_size(height, precision)
        image = w.group_image([rng.randrange(groups) for _ in range(tiles)])
        assert decodes_as_stated(Image(width, height, Pixels(pixels, meta=(precision, image))))


def test_meta_groups_no_symbol_uses_still_have_codes():
    # The decoder reads codes for every group up to the largest in the entropy
    # image, whether or not a symbol is written with it.
    width, height = 61, 35
    symbols = [*map(Lit.argb, _random(width * 3, 2)), Copy(width * (height - 3), 1)]
    for groups in ([0, 0, 1, 0], [0, 0, 0, 3]):
        pixels = Pixels(symbols, meta=(5, w.group_image(groups)))
        assert decodes_as_stated(Image(width, height, pixels))
    # the entropy image itself with a cache and a copy
    image = Pixels([Lit(0, 0, 2, 0), Lit(0, 0, 1, 0), Hit(w.cache_key(0x200, 2)), Copy(1, 1)])
    image.cache_bits = 2
    assert decodes_as_stated(Image(width, height, Pixels(symbols, meta=(5, image))))


def test_prefix_code_forms():
    for codes in w.code_forms():
        assert decodes_as_stated(Image(3, 1, Pixels(w.CODE_FORM_PIXELS, codes=[codes])))
    one = [Lit(255, 7, 1, 9)] * 3
    assert decodes_as_stated(Image(3, 1, Pixels(one, codes=[[Code.simple_of(1, wide=False)]])))


def test_codes_libwebp_refuses():
    pixels = Pixels([Lit(255, 7, 1, 9), Lit(255, 7, 0, 9)])
    refused = [
        Code({0: 1, 1: 2}),  # incomplete
        Code({0: 1, 1: 1, 2: 1}),  # over-subscribed
        Code({0: 1, 1: 1}, tokens=[(0, 0)] * 280),  # no symbol at all
        Code({0: 1, 1: 1}, max_symbol=281),  # max_symbol past the alphabet
        Code({0: 16, 1: 1}, tokens=[(1, 0), (1, 0)], length_lengths={1: 1}),  # one token code
    ]
    for code in refused:
        pixels.codes = [[code]]
        assert w.libwebp_rgba(Image(2, 1, pixels).riff()) is None, code
    pixels.codes = [[Code({0: 1, 1: 1}, max_symbol=280)]]  # the whole alphabet: fine
    assert decodes_as_stated(Image(2, 1, pixels))


def test_repeat_codes_in_code_lengths():
    # 16 repeats the last non-zero length (8 before any), 17 and 18 runs of zeros.
    eights = [(16, 3)] * 42 + [(8, 0)] * 4  # 42 * 6 + 4 = 256 lengths of 8
    code = Code({s: 8 for s in range(256)}, tokens=[*eights, (17, 0)])  # 3 zeros too many
    im = Image(2, 1, Pixels([Lit(255, 1, 2, 3), Lit(255, 4, 5, 6)], codes=[[None, code]]))
    assert w.libwebp_rgba(im.riff()) is None
    code.tokens = eights
    assert decodes_as_stated(im)
    # 0: 1, 1..199: 0 (138 + 61), 200: 1, 201..255: 0 (10 + 45)
    zeros = Code({0: 1, 200: 1}, tokens=[(1, 0), (18, 127), (18, 50), (1, 0), (17, 7), (18, 34)])
    im.pixels.codes = [[None, None, zeros]]
    im.pixels.symbols = [Lit(255, 1, 2, 0), Lit(255, 4, 5, 200)]
    assert decodes_as_stated(im)
    zeros.tokens = zeros.tokens[:-1]  # 45 lengths missing: the stream runs on into the pixels
    assert w.libwebp_rgba(im.riff()) is None


def test_copies():
    values = _random(20, 9)
    outcomes = set()
    for code in range(1, 121):
        assert decodes_as_stated(Image(1, 40, Pixels([*map(Lit.argb, values), Copy(20, code)])))
        im = Image(13, 3, Pixels([*map(Lit.argb, values), Copy(19, code)]))
        outcomes.add(decodes_as_stated(im))
    assert outcomes == {True, False}  # some plane codes reach before the first pixel
    assert decodes_as_stated(Image(13, 3, Pixels([*map(Lit.argb, values), Copy.raw(19, 20)])))
    assert not decodes_as_stated(Image(13, 3, Pixels([*map(Lit.argb, values), Copy.raw(19, 21)])))
    assert not decodes_as_stated(Image(13, 3, Pixels([*map(Lit.argb, values), Copy.raw(20, 1)])))
