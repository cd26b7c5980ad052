"""The structural check a JPEG 2000 passes before it is copied verbatim into the
PDF (app/engine/structure.py, _jp2_sound): each rule at its boundary. A file
that fails is decoded instead: a PDF when Pillow decodes it, 422 when it does
not. The files that pass are copied and pdfium draws them like Pillow."""

from __future__ import annotations

import io
import struct

import numpy as np
import openjpeg
import pikepdf
import pypdfium2 as pdfium
import pytest
from PIL import Image

from app.engine import structure
from app.engine.convert import convert_to_pdf
from app.engine.inspect import inspect_image
from app.errors import ImageTooComplex, InvalidImage
from tests.support import images

MAX_PIXELS = 40_000_000
W, H = 70, 45  # 3 x 2 tiles of 32 x 32


def _rgb() -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    g = (x * y * 37) % 256
    return np.ascontiguousarray(np.stack([g, g[::-1], g[:, ::-1]], -1).astype(np.uint8))


def rgb8(**options) -> bytes:
    return images.encode(Image.fromarray(_rgb(), "RGB"), "JPEG2000", **options)


def tiled() -> bytes:
    return rgb8(tile_size=(32, 32), no_jp2=True)


def grey16_tiled() -> bytes:
    y, x = np.mgrid[0:H, 0:W]
    samples = ((x * 977 + y * 1409) % 65536).astype("<u2")
    im = Image.frombytes("I;16", (W, H), samples.tobytes())
    return images.encode(im, "JPEG2000", tile_size=(32, 16))


def tile_parts(data: bytes) -> list[tuple[int, int]]:
    """(offset, Psot) of each SOT, walking the main header's segments."""
    start = data.index(b"\xff\x4f\xff\x51")
    pos = start + 2
    while data[pos : pos + 2] != b"\xff\x90":
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    out = []
    while data[pos : pos + 2] == b"\xff\x90":
        (psot,) = struct.unpack_from(">I", data, pos + 6)
        out.append((pos, psot))
        pos += psot
    assert data[pos : pos + 2] == b"\xff\xd9"
    return out


def put(data: bytes, at: int, fmt: str, *values) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, *values)
    return bytes(out)


def copied(data: bytes) -> bool:
    """Whether the service copies the file (the check passes): its route and
    the check's verdict agree."""
    sound = structure.scan(data, "jp2").sound
    route = inspect_image(data, MAX_PIXELS).route
    assert (route == "embed-jp2") == sound, route
    return sound


def pillow_decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception:
        return False
    return True


def assert_decoded_or_refused(data: bytes) -> None:
    """Not copied: a PDF of decoded pixels when Pillow decodes the file, else 422."""
    assert not copied(data)
    info = inspect_image(data, MAX_PIXELS)
    if not pillow_decodes(data):
        with pytest.raises(InvalidImage):
            convert_to_pdf(data, info)
        return
    pdf = convert_to_pdf(data, info)
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        assert doc.pages[0].Resources.XObject.Im0.get("/Filter") != "/JPXDecode"


# --- tile-parts ---------------------------------------------------------------


def test_seed_is_copied_with_six_tile_parts():
    data = tiled()
    assert len(tile_parts(data)) == 6
    assert copied(data)


@pytest.mark.parametrize("delta", [-1, 1])
def test_psot_one_short_or_one_long_is_not_copied(delta):
    data = tiled()
    pos, psot = tile_parts(data)[2]
    assert_decoded_or_refused(put(data, pos + 6, ">I", psot + delta))


def test_last_psot_one_long_or_short_misses_eoc():
    data = tiled()
    pos, psot = tile_parts(data)[-1]
    for delta in (-1, 1):
        assert not copied(put(data, pos + 6, ">I", psot + delta))


def test_last_psot_zero_runs_to_eoc_and_is_copied():
    # T.800 A.4.2: Psot 0 means "to the end of the codestream" on the last one.
    data = tiled()
    pos, _ = tile_parts(data)[-1]
    assert copied(put(data, pos + 6, ">I", 0))
    first, _ = tile_parts(data)[0]
    assert not copied(put(data, first + 6, ">I", 0))  # not on an earlier one


def test_isot_below_the_tile_count_only():
    data = tiled()
    pos, _ = tile_parts(data)[-1]
    (isot,) = struct.unpack_from(">H", data, pos + 4)
    assert isot == 5  # the last of 3 x 2 tiles
    assert_decoded_or_refused(put(data, pos + 4, ">H", 6))


def test_every_tile_needs_a_part():
    data = tiled()
    pos, _ = tile_parts(data)[-1]
    # Tile 5 never appears, tile 4 gets a second part: TPsot 1 is in order.
    assert not copied(put(data, pos + 4, ">HIBB", 4, tile_parts(data)[-1][1], 1, 0))
    # The same part numbered 0 again for tile 4: out of order.
    assert not copied(put(data, pos + 4, ">H", 4))


def test_tnsot_must_match_the_parts_present():
    data = tiled()
    pos, _ = tile_parts(data)[0]
    assert copied(put(data, pos + 11, ">B", 1))  # one part, and says so
    assert not copied(put(data, pos + 11, ">B", 2))  # says two, has one
    assert not copied(put(data, pos + 10, ">B", 1))  # TPsot 1 with no part 0


def test_missing_eoc_is_not_copied():
    data = tiled()
    assert data.endswith(b"\xff\xd9")
    assert_decoded_or_refused(data[:-2])
    assert_decoded_or_refused(data[:-1])
    assert copied(data + b"\0\0")  # trailing bytes after EOC are not read


def test_tile_part_cut_inside_its_header_is_not_copied():
    data = tiled()
    pos, _ = tile_parts(data)[-1]
    assert_decoded_or_refused(data[: pos + 13] + b"\xff\xd9")


# --- main header --------------------------------------------------------------


def test_main_header_needs_cod_and_qcd_once():
    data = tiled()
    cod = data.index(b"\xff\x52")
    assert not copied(put(data, cod, ">H", 0xFF64))  # COD turned into a comment
    # A second COD: the same segment again.
    (length,) = struct.unpack_from(">H", data, cod + 2)
    assert not copied(
        data[: cod + 2 + length] + data[cod : cod + 2 + length] + data[cod + 2 + length :]
    )


def test_unknown_marker_in_main_header_is_not_copied():
    data = tiled()
    com = b"\xff\x64\x00\x06\x00\x01ab"
    sot = tile_parts(data)[0][0]
    assert copied(data[:sot] + com + data[sot:])
    assert not copied(data[:sot] + b"\xff\xe4" + com[2:] + data[sot:])
    assert not copied(data[:sot] + com[:4] + b"\x00\x02ab" + data[sot:])  # reserved Rcom


def main_header_segments(data: bytes) -> int:
    """Marker segments after SIZ and before the first SOT."""
    pos, count = 4 + struct.unpack_from(">H", data, 4)[0], 0
    while data[pos : pos + 2] != b"\xff\x90":
        count += 1
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    return count


def test_main_header_segments_are_capped():
    data = tiled()
    sot = tile_parts(data)[0][0]
    com = b"\xff\x64\x00\x05\x00\x01a"
    others = structure.JP2_MAX_HEADER_MARKERS - main_header_segments(data)
    assert copied(data[:sot] + com * others + data[sot:])
    with pytest.raises(ImageTooComplex):
        inspect_image(data[:sot] + com * (others + 1) + data[sot:], MAX_PIXELS)


def test_siz_segment_length_and_component_count_agree():
    data = tiled()
    assert not copied(put(data, 4, ">H", 38 + 3 * 3 + 1))
    assert not copied(put(data, 40, ">H", 2))


def test_part2_capabilities_are_not_copied():
    data = tiled()
    assert copied(put(data, 4 + 2, ">H", 2))  # Rsiz 2: Part 1 profile 1
    assert not copied(put(data, 4 + 2, ">H", 0x8000))


# --- JP2 boxes ----------------------------------------------------------------


def ihdr_at(data: bytes) -> int:
    return data.index(b"ihdr") + 4


@pytest.mark.parametrize(
    ("field", "fmt", "offset"),
    [("height", ">I", 0), ("width", ">I", 4), ("components", ">H", 8), ("depth", ">B", 10)],
)
def test_ihdr_must_agree_with_siz(field, fmt, offset):
    data = rgb8()
    at = ihdr_at(data) + offset
    (value,) = struct.unpack_from(fmt, data, at)
    assert value == {"height": H, "width": W, "components": 3, "depth": 7}[field]
    assert copied(put(data, at, fmt, value))
    for wrong in (value - 1, value + 1):
        assert_decoded_or_refused(put(data, at, fmt, wrong))


def test_jp2_box_lengths_must_tile_the_file():
    data = rgb8()
    jp2c = data.index(b"jp2c") - 4
    (length,) = struct.unpack_from(">I", data, jp2c)
    assert jp2c + length == len(data)
    assert not copied(put(data, jp2c, ">I", length + 1))
    assert not copied(put(data, jp2c, ">I", length - 1))
    assert copied(put(data, jp2c, ">I", 0))  # 0: to the end of the file


def test_ftyp_must_list_jp2():
    data = rgb8()
    ftyp = data.index(b"ftyp")
    assert not copied(put(data, ftyp + 12, ">4s", b"jpx "))  # compatibility list without jp2


def test_colour_spaces_the_copy_routes_cannot_name_are_decoded():
    # openjpeg writes colr EnumCS 0 without a photometric interpretation: img2pdf
    # raised, and the file Pillow decodes was refused with 422.
    data = openjpeg.encode(_rgb(), codec_format=1)
    assert struct.unpack_from(">I", data, data.index(b"colr") + 7)[0] == 0
    assert pillow_decodes(data)
    assert_decoded_or_refused(data)


def test_mixed_component_depths_are_decoded():
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([x * 1000 % 4096, y * 90, (x + y) * 30], -1).astype(np.uint16)
    data = openjpeg.encode(np.ascontiguousarray(rgb), bits_stored=12, codec_format=0)
    siz = put(data, 42, ">B", 11 - 1)  # first component 11 bits of the 12 it holds
    assert pillow_decodes(siz)
    assert_decoded_or_refused(siz)


# --- what passes is drawn -----------------------------------------------------


def rendered(pdf: bytes) -> np.ndarray:
    doc = pdfium.PdfDocument(pdf)
    try:
        return np.asarray(doc[0].render(scale=96 / 72).to_pil().convert("RGB")).astype(int)
    finally:
        doc.close()


@pytest.mark.parametrize(
    "name", ["rgb8.jp2", "rgb8-tiled.j2k", "rgb8-psot0.j2k", "grey16-tiled.jp2"]
)
def test_copied_files_render_like_pillow(name):
    data = {
        "rgb8.jp2": rgb8,
        "rgb8-tiled.j2k": tiled,
        "rgb8-psot0.j2k": lambda: put(tiled(), tile_parts(tiled())[-1][0] + 6, ">I", 0),
        "grey16-tiled.jp2": grey16_tiled,
    }[name]()
    info = inspect_image(data, MAX_PIXELS)
    assert info.route == "embed-jp2"
    pdf = convert_to_pdf(data, info)
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        image = doc.pages[0].Resources.XObject.Im0
        assert image.Filter == "/JPXDecode"
        assert image.read_raw_bytes() == data
    with Image.open(io.BytesIO(data)) as im:
        if im.mode.startswith("I;16"):
            deep = np.asarray(im).astype(np.uint32)
            want = ((deep * 255 + 32767) // 65535).astype(np.uint8)
            want = np.repeat(want[..., None], 3, -1)
        else:
            want = np.asarray(im.convert("RGB"))
    got = rendered(pdf)
    assert got.shape == want.shape
    assert np.abs(got - want.astype(int)).max() <= 1


def test_a_file_cut_inside_the_codestream_header_is_not_sound():
    # The depth walk runs out of bytes in SIZ (the scan's "cut short" path):
    # that must not read as sound.
    data = rgb8()
    cut = data.index(b"\xff\x4f\xff\x51") + 8
    assert not structure.scan(data[:cut], "jp2").sound
    assert structure.scan(data, "jp2").sound
