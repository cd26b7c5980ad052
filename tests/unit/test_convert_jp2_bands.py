"""JPEG 2000 with alpha decoded in bands by libopenjp2 (app.engine.jp2_bands).

Every sample of the PDF is compared with the pillow-flatten route's PDF of the
same file (Pillow's whole decode, flattened onto white, through img2pdf), with
bands of a few rows so that band edges fall inside tiles, code-blocks and
precincts. Files the band decoder does not know keep the old route; decode
failures are 422 as before.
"""

from __future__ import annotations

import ctypes
import io
import mmap
import struct
from dataclasses import replace

import numpy as np
import openjpeg
import pikepdf
import pytest
from PIL import Image

from app.engine import jp2_bands
from app.engine.convert import convert_to_pdf
from app.engine.inspect import inspect_image
from app.engine.pricing import _jp2_decoder_bytes, estimate_peak_bytes, jp2_bands_decoder_bytes
from app.errors import InvalidImage
from app.settings import Settings
from tests.support import images
from tests.unit.test_convert_stream import streams

rng = np.random.default_rng(2000)


def photo(w: int, h: int, mode: str) -> np.ndarray:
    """Noise over gradients, alpha with clear, half and opaque areas and noise:
    every blend weight of the flattening shows up."""
    y, x = np.mgrid[0:h, 0:w]
    base = (x * 255 // max(w - 1, 1) + y * 255 // max(h - 1, 1)) // 2
    planes = [np.clip(base + rng.integers(-40, 41, (h, w)), 0, 255) for _ in mode]
    alpha = np.where(x < w // 3, 0, np.where(y < h // 2, 128, 255))
    planes[-1] = np.where(rng.random((h, w)) < 0.3, rng.integers(0, 256, (h, w)), alpha)
    return np.stack(planes, -1).astype(np.uint8)


def pillow_file(w: int, h: int, mode: str, **params) -> bytes:
    return images.encode(Image.fromarray(photo(w, h, mode), mode), "JPEG2000", **params)


def today(data: bytes) -> bytes:
    """The pillow-flatten route's PDF (Pillow decodes the whole image)."""
    info = inspect_image(data, 10**9)
    return convert_to_pdf(data, replace(info, route="pillow-flatten"))


def banded(data: bytes) -> bytes:
    info = inspect_image(data, 10**9)
    assert info.route == "jp2-bands"
    return convert_to_pdf(data, info)


def page(pdf: bytes) -> tuple:
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        p = doc.pages[0]
        return tuple(float(v) for v in p.MediaBox), float(p.obj.get("/UserUnit", 1))


def assert_same_page(data: bytes) -> None:
    want, got = today(data), banded(data)
    (want_colour, want_alpha), (got_colour, got_alpha) = streams(want), streams(got)
    assert want_alpha is None and got_alpha is None
    assert got_colour.shape == want_colour.shape
    assert np.array_equal(got_colour, want_colour)
    (got_box, got_unit), (want_box, want_unit) = page(got), page(want)
    assert got_unit == want_unit
    # Both at img2pdf's reading of the file's resolution; this writer keeps
    # 4 decimals, img2pdf 5.
    assert got_box == pytest.approx(want_box, abs=1e-4)


@pytest.fixture
def small_bands(monkeypatch):
    """Bands of 5 rows for a 61 px wide RGBA image (3 for 97 px wide)."""
    monkeypatch.setattr(jp2_bands, "BAND_BYTES", 61 * 4 * 4 * 5)


PILLOW_OPTIONS = {
    "lossless, one tile": {},
    "jp2 codestream only": {"no_jp2": True},
    "tiles 16x24": {"tile_size": (16, 24)},
    "tiles 40x40, offset grid": {"tile_size": (40, 40), "tile_offset": (3, 2), "offset": (5, 7)},
    "image offset, tiles 64x64": {"offset": (5, 3), "tile_size": (64, 64)},
    "irreversible": {"irreversible": True},
    "irreversible, layers": {"irreversible": True, "quality_layers": [40, 10, 2]},
    "two resolutions, 16x16 code-blocks": {"num_resolutions": 2, "codeblock_size": (16, 16)},
    "one resolution": {"num_resolutions": 1},
    "precincts 32x32, RPCL": {"precinct_size": (32, 32), "progression": "RPCL"},
    "precincts 32x32, code-blocks 8x8, CPRL": {
        "precinct_size": (32, 32),
        "codeblock_size": (8, 8),
        "progression": "CPRL",
    },
    "PCRL, tiles 32x20": {"progression": "PCRL", "tile_size": (32, 20)},
    "RLCP, irreversible, tiles 25x30": {
        "progression": "RLCP",
        "irreversible": True,
        "tile_size": (25, 30),
    },
}


@pytest.mark.parametrize("by_tile", [True, False], ids=["by tile", "in bands"])
@pytest.mark.parametrize("mode", ["RGBA", "LA"])
@pytest.mark.parametrize("name", sorted(PILLOW_OPTIONS))
def test_bands_hold_the_pillow_flatten_pixels(small_bands, monkeypatch, name, mode, by_tile):
    # Files of several tiles: a tile at a time, or (tiles over TILE_BYTES)
    # in bands across them.
    if not by_tile:
        monkeypatch.setattr(jp2_bands, "TILE_BYTES", 0)
    data = pillow_file(61, 83, mode, **PILLOW_OPTIONS[name])
    plan = jp2_bands.plan(data)
    assert plan is not None and plan.by_tile == (by_tile and not plan.single_tile)
    assert_same_page(data)


@pytest.mark.parametrize("size", [(1, 1), (1, 37), (53, 1), (64, 64), (97, 131), (61, 5), (61, 6)])
@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_band_edges_at_every_size(small_bands, size, mode):
    # 61 px wide, 5-row bands: 5 rows is one band, 6 ends with a 1-row band.
    assert_same_page(pillow_file(*size, mode))


@pytest.mark.parametrize(
    "params",
    [
        {"codec_format": 0},
        {"codec_format": 0, "compression_ratios": [20, 5]},
        {"codec_format": 0, "add_tlm": True, "add_plt": True},
        {"codec_format": 0, "signal_noise_ratios": [30, 50]},
    ],
    ids=["lossless", "lossy, 2 layers", "TLM+PLT", "lossy by SNR"],
)
def test_files_from_another_encoder(small_bands, params):
    # pylibjpeg-openjpeg, bare codestreams (its .jp2 names no colour space:
    # kept, below): 6 resolutions, 64x64 code-blocks.
    assert_same_page(openjpeg.encode(photo(61, 83, "RGBA"), **params))


@pytest.mark.parametrize("reuse", [1, 3, 1000])
def test_a_codec_read_afresh_or_reused_decodes_the_same(small_bands, monkeypatch, reuse):
    # A single tile: the codec is reused for `reuse` bands (17 bands here).
    monkeypatch.setattr(jp2_bands, "REUSE_BANDS", reuse)
    assert_same_page(pillow_file(61, 83, "RGBA", irreversible=True))


def test_one_band_is_the_whole_image_at_the_default_size():
    data = pillow_file(97, 131, "RGBA")
    plan = jp2_bands.plan(data)
    assert plan is not None and jp2_bands.bands(plan) == [(0, 131)]
    assert_same_page(data)


def test_bands_follow_whole_tile_rows_when_they_fit(monkeypatch):
    monkeypatch.setattr(jp2_bands, "TILE_BYTES", 0)
    data = pillow_file(61, 83, "RGBA", tile_size=(32, 20), tile_offset=(0, 0), offset=(0, 7))
    plan = jp2_bands.plan(data)
    assert plan is not None and (plan.first_tile_rows, plan.tile_height) == (13, 20)
    monkeypatch.setattr(jp2_bands, "BAND_BYTES", 61 * 4 * 4 * 45)  # 2 tile rows a band
    assert jp2_bands.bands(plan) == [(0, 33), (33, 73), (73, 83)]
    assert_same_page(data)
    monkeypatch.setattr(jp2_bands, "BAND_BYTES", 61 * 4 * 4 * 19)  # under a tile row
    assert jp2_bands.bands(plan)[:3] == [(0, 19), (19, 38), (38, 57)]
    assert_same_page(data)


def test_tiles_too_large_for_a_row_go_in_bands(monkeypatch):
    data = pillow_file(61, 83, "RGBA", tile_size=(32, 40))
    plan = jp2_bands.plan(data)
    assert plan is not None and plan.by_tile
    assert (plan.first_tile_columns, plan.tile_width) == (32, 32)
    monkeypatch.setattr(jp2_bands, "ROW_BYTES", 40 * 61 * 3 - 1)  # a row of tiles: 1 byte over
    assert not plan.by_tile
    monkeypatch.setattr(jp2_bands, "ROW_BYTES", 40 * 61 * 3)
    monkeypatch.setattr(jp2_bands, "TILE_BYTES", 32 * 40 * 16 - 1)  # a tile: 1 byte over
    assert not plan.by_tile
    monkeypatch.setattr(jp2_bands, "TILE_BYTES", 32 * 40 * 16)
    assert plan.by_tile


def test_a_mapped_source_is_read_in_place(small_bands, tmp_path):
    # The conversion process hands a read-only mapping of the source over.
    data = pillow_file(61, 83, "RGBA", tile_size=(32, 32))
    path = tmp_path / "a.jp2"
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        info = inspect_image(mapped, 10**9)
        assert info.route == "jp2-bands"
        got = convert_to_pdf(mapped, info)
    assert np.array_equal(streams(got)[0], streams(today(data))[0])


# --- what keeps the old route ----------------------------------------------


def _boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        out.append((kind, data[pos + 8 : pos + length]))
        pos += length
    return out


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def with_header_boxes(data: bytes, edit) -> bytes:
    """`data` (.jp2) with its jp2h children replaced by edit(children)."""
    out = b""
    for kind, payload in _boxes(data):
        if kind == b"jp2h":
            payload = b"".join(_box(k, p) for k, p in edit(_boxes(payload)))
        out += _box(kind, payload)
    return out


def with_siz_component(data: bytes, index: int, ssiz: int, xr: int = 1, yr: int = 1) -> bytes:
    """`data` with SIZ's component `index` given (Ssiz, XRsiz, YRsiz)."""
    at = data.index(b"\xff\x4f\xff\x51") + 42 + 3 * index
    return data[:at] + bytes([ssiz, xr, yr]) + data[at + 3 :]


def _colr(enumcs: int) -> bytes:
    return struct.pack(">BBBI", 1, 0, 0, enumcs)


KEPT = {
    "16-bit RGBA": lambda: openjpeg.encode(
        (photo(61, 83, "RGBA").astype(np.uint16) * 257), bits_stored=16, codec_format=0
    ),
    "12-bit RGBA": lambda: openjpeg.encode(
        photo(61, 83, "RGBA").astype(np.uint16) * 16, bits_stored=12, codec_format=0
    ),
    "signed 8-bit": lambda: openjpeg.encode(
        (photo(61, 83, "RGBA").astype(np.int16) - 128).astype(np.int8), codec_format=0
    ),
    "alpha subsampled": lambda: with_siz_component(
        pillow_file(61, 83, "RGBA", no_jp2=True), 3, 7, 2, 2
    ),
    "alpha 4-bit": lambda: with_siz_component(pillow_file(61, 83, "RGBA", no_jp2=True), 3, 3),
    "sYCC": lambda: with_header_boxes(
        pillow_file(61, 83, "RGBA"),
        lambda kids: [(k, _colr(18) if k == b"colr" else p) for k, p in kids],
    ),
    "ICC profile": lambda: with_header_boxes(
        pillow_file(61, 83, "RGBA"),
        lambda kids: [(k, b"\x02\x00\x00" + b"\0" * 128 if k == b"colr" else p) for k, p in kids],
    ),
    "alpha first (cdef)": lambda: with_header_boxes(
        pillow_file(61, 83, "RGBA"),
        lambda kids: [
            (k, struct.pack(">H12H", 4, 0, 1, 0, 1, 0, 1, 2, 0, 2, 3, 0, 3) if k == b"cdef" else p)
            for k, p in kids
        ],
    ),
    "palette box": lambda: with_header_boxes(
        pillow_file(61, 83, "LA"),
        lambda kids: [
            *kids,
            (b"pclr", struct.pack(">HB3B", 2, 3, 7, 7, 7) + bytes(6)),
            (b"cmap", struct.pack(">HBB", 0, 1, 0)),
        ],
    ),
    "codestream cut": lambda: pillow_file(61, 83, "RGBA")[:-700],
    "jp2 colour space 0": lambda: openjpeg.encode(photo(61, 83, "RGBA"), codec_format=1),
}


@pytest.mark.parametrize(
    "resc", [(3, 1, 15, 10), (1, 200, 1, 160)], ids=["~118x59 dpi", "/UserUnit"]
)
def test_the_page_is_the_old_routes_at_the_files_resolution(resc):
    # A resc box, read as img2pdf reads it (num / den * 3937 dpi): the page is
    # the pixels at that dpi; under ~0.3 dpi a 61 px side is over 14,400 pt,
    # and the page gets a /UserUnit.
    box = _box(b"resc", struct.pack(">HHHHbb", *resc, 0, 0))
    data = with_header_boxes(pillow_file(61, 83, "RGBA"), lambda kids: [*kids, (b"res ", box)])
    assert_same_page(data)
    media, unit = page(banded(data))
    assert (unit > 1) == (resc[0] / resc[1] < 0.01)
    assert media != page(banded(pillow_file(61, 83, "RGBA")))[0]  # not the default 96 dpi


@pytest.mark.parametrize("name", sorted(KEPT))
def test_unusual_files_keep_the_old_route(name):
    data = KEPT[name]()
    assert jp2_bands.plan(data) is None
    try:
        info = inspect_image(data, 10**9)
    except InvalidImage:
        return  # refused before any route, as before
    assert info.route != "jp2-bands"


def test_an_unknown_library_version_keeps_pillow(monkeypatch):
    monkeypatch.setattr(jp2_bands, "_KNOWN_VERSION", b"9.9.")
    monkeypatch.setattr(jp2_bands, "_lib", None)
    data = pillow_file(61, 83, "RGBA")
    assert not jp2_bands.available()
    info = inspect_image(data, 10**9)
    assert info.route == "pillow-flatten"
    assert convert_to_pdf(data, info).startswith(b"%PDF-")


def test_the_structures_are_openjpeg_2_5s():
    # sizeof/offsetof from openjpeg.h of v2.5.4 (src/lib/openjp2/openjpeg.h)
    # compiled with gcc on x86_64: opj_dparameters_t 8252 (flags at 8248),
    # opj_image_t 48 (comps at 24), opj_image_comp_t 64 (data at 48, alpha at 56).
    assert ctypes.sizeof(jp2_bands._DParameters) == 8252
    assert jp2_bands._DParameters.flags.offset == 8248
    assert jp2_bands._DParameters.DA_x0.offset == 8208
    assert ctypes.sizeof(jp2_bands._Image) == 48
    assert jp2_bands._Image.comps.offset == 24
    assert jp2_bands._Image.icc_profile_len.offset == 40
    assert ctypes.sizeof(jp2_bands._Component) == 64
    assert jp2_bands._Component.sgnd.offset == 32
    assert jp2_bands._Component.data.offset == 48
    assert jp2_bands._Component.alpha.offset == 56
    lib = jp2_bands._library()
    assert lib is not None and lib.opj_version().startswith(b"2.5.")


# --- errors -------------------------------------------------------------------


def with_bad_quantisation(data: bytes, tile: int) -> bytes:
    """`data` (.j2k, reversible, several tiles) with a QCD in tile `tile`'s
    header whose guard bits and exponents make 37 bit-planes: structurally
    sound, and openjpeg refuses to decode that tile's code-blocks (T1
    handles at most 30)."""
    first = data.index(b"\xff\x90")
    at = data.index(b"\xff\x5c", 0, first)
    (length,) = struct.unpack_from(">H", data, at + 2)
    assert data[at + 4] & 0x1F == 0  # no quantisation: one exponent byte each
    qcd = data[at : at + 4] + b"\xe0" + b"\xf8" * (length - 3)
    pos = first
    while True:
        isot, psot = struct.unpack_from(">HI", data, pos + 4)
        if isot == tile:
            sot = (
                data[pos : pos + 6] + struct.pack(">I", psot + len(qcd)) + data[pos + 10 : pos + 12]
            )
            return data[:pos] + sot + qcd + data[pos + 12 :]
        pos += psot


def test_a_band_that_fails_to_decode_is_422(small_bands):
    # Tiles of 61x20: the fourth tile row fails, after bands of the first
    # three were handed on.
    good = pillow_file(61, 83, "RGBA", tile_size=(61, 20), no_jp2=True)
    data = with_bad_quantisation(good, 3)
    plan = jp2_bands.plan(data)
    assert plan is not None
    strips = jp2_bands.flattened_strips(data, plan)
    rows = 0
    with pytest.raises(jp2_bands.BadData):
        for colour, _ in strips:
            rows += len(colour)
    assert rows == 60
    info = inspect_image(data, 10**9)
    assert info.route == "jp2-bands"
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, info)
    with pytest.raises(InvalidImage):  # as Pillow's whole decode
        today(data)


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9, 0.999])
def test_a_truncated_file_behaves_as_before(keep):
    data = pillow_file(61, 83, "RGBA", tile_size=(32, 32))
    cut = data[: int(len(data) * keep)]
    assert jp2_bands.plan(cut) is None
    try:
        info = inspect_image(cut, 10**9)
    except InvalidImage:
        return
    assert info.route == "pillow-flatten"
    try:
        want = today(cut)
    except InvalidImage:
        with pytest.raises(InvalidImage):
            convert_to_pdf(cut, info)
        return
    assert np.array_equal(streams(convert_to_pdf(cut, info))[0], streams(want)[0])


# --- pricing ------------------------------------------------------------------


def test_the_price_is_a_band_not_the_image():
    data = pillow_file(61, 83, "RGBA")
    info = inspect_image(data, 10**9)
    assert info.decoder_bytes == jp2_bands_decoder_bytes(jp2_bands.plan(data))
    # 40 MP RGBA from a 20 MiB source: Pillow's decode was priced over 1 GB
    # (413 on the default 224 MiB work pool); the bands fit it.
    w, h, source = 7303, 5477, 20 * 1024 * 1024
    plan = jp2_bands.Plan(w, h, 4, 2, True)
    big = replace(info, width=w, height=h, decoder_bytes=jp2_bands_decoder_bytes(plan))
    old = replace(big, route="pillow-flatten", decoder_bytes=_jp2_decoder_bytes(w, h, 4))
    budget = Settings.from_env({}).worker_memory_budget
    assert estimate_peak_bytes(big, source) <= budget < estimate_peak_bytes(old, source)
    # In 1000x1000 tiles: one tile's samples and a row of tiles.
    tiled = replace(plan, single_tile=False, tile_width=1000, tile_height=1000)
    assert tiled.by_tile
    assert jp2_bands_decoder_bytes(tiled) == 4 * 1000 * 1000 * 16 + 1000 * w * 3
    tiled = replace(big, decoder_bytes=jp2_bands_decoder_bytes(tiled))
    assert estimate_peak_bytes(tiled, source) <= budget


def test_a_short_image_is_priced_for_its_own_rows():
    # One band holds the whole image: no more rows than it has.
    short, tall = jp2_bands.Plan(7303, 3, 4, 2, True), jp2_bands.Plan(7303, 5477, 4, 2, True)
    assert jp2_bands_decoder_bytes(short) == int(10.0 * 3 * 7303 * 4 * 4)
    assert jp2_bands_decoder_bytes(short) < jp2_bands_decoder_bytes(tall)


def _flat_tiled(w: int, h: int, tile: tuple[int, int]) -> bytes:
    im = Image.new("RGBA", (w, h), (10, 20, 30, 128))
    return images.encode(im, "JPEG2000", tile_size=tile, no_jp2=True)


def test_many_tiles_keep_pillow_past_the_codec_work_bound():
    """Each tile (or band) reads the file's every tile header afresh: 4096 tiles
    of 8x8 took 22 s here against Pillow's one decode in 0.07 s. 1024 tiles a
    tile at a time (1024 x 1024 codec-tiles, the bound) keep the band route;
    1056 (33 x 32) go to Pillow, whose page is the same."""
    at_bound = _flat_tiled(512, 512, (16, 16))
    plan = jp2_bands.plan(at_bound)
    assert plan is not None and plan.by_tile and plan.tiles == 1024
    assert plan.codec_tiles == jp2_bands.MAX_CODEC_TILES
    assert inspect_image(at_bound, 10**9).route == "jp2-bands"
    past = _flat_tiled(528, 512, (16, 16))
    assert jp2_bands.plan(past) is None
    info = inspect_image(past, 10**9)
    assert info.route == "pillow-flatten"
    got, want = convert_to_pdf(past, info), today(past)  # /ID differs across a second
    assert page(got) == page(want)
    assert np.array_equal(streams(got)[0], streams(want)[0])


def test_bands_across_many_tiles_count_each_tile_they_cut(monkeypatch):
    monkeypatch.setattr(jp2_bands, "TILE_BYTES", 0)  # in bands
    data = pillow_file(61, 83, "RGBA", tile_size=(8, 8))
    plan = jp2_bands.plan(data)
    assert plan is not None and not plan.by_tile and plan.tiles == 8 * 11
    work = len(jp2_bands.bands(plan)) * 88 * jp2_bands.BAND_TILE_WEIGHT
    assert plan.codec_tiles == work
    monkeypatch.setattr(jp2_bands, "MAX_CODEC_TILES", work)
    assert jp2_bands.plan(bytes(bytearray(data))) == plan
    monkeypatch.setattr(jp2_bands, "MAX_CODEC_TILES", work - 1)
    assert jp2_bands.plan(bytes(bytearray(data))) is None
