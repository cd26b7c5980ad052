"""app.sandbox: the child process a conversion runs in, with the real zygote.

Signals stand in for a decoder that hangs (SIGSTOP) or crashes (SIGSEGV), so the
outcomes do not depend on timing; memory limits are exercised by real images.
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import pytest
from PIL import Image

from app.engine.pricing import estimate_peak_bytes
from app.engine.routes import low_memory_variant
from app.errors import (
    ConversionCrashed,
    ConversionTimeout,
    ConversionTooLarge,
    InvalidImage,
)
from app.sandbox import Limits, Sandbox, inspect_reservation, zygote_pid
from tests.support import hostile, images

MAX_PIXELS = 40_000_000
TIMEOUT = 3.0
BUDGET = 400 * 1024 * 1024


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(Limits(timeout_s=TIMEOUT, max_memory=BUDGET))
    box.start()
    return box


@pytest.fixture(scope="module")
def quick():
    """A sandbox whose timeout the hang tests wait out."""
    return Sandbox(Limits(timeout_s=1.0, max_memory=BUDGET))


def zygote_children() -> list[int]:
    pid = zygote_pid()
    assert pid is not None
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def limits_of(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        name, soft = line[:26].strip(), line[26:47].strip()
        out[name] = soft
    return out


def convert(sandbox: Sandbox, data: bytes, reserve: int | None = None) -> bytes:
    with sandbox.job(data) as job:
        info = job.inspect(MAX_PIXELS)
        need = estimate_peak_bytes(info, len(data))
        if need > BUDGET:
            info = low_memory_variant(info) or info
            need = estimate_peak_bytes(info, len(data))
        return job.convert(info, need if reserve is None else reserve)


def test_a_conversion_round_trips_and_leaves_no_process(sandbox):
    pdf = convert(sandbox, images.jpeg(64, 48))
    assert pdf.startswith(b"%PDF-")
    assert zygote_children() == []


def test_child_holds_only_stdio_on_dev_null_its_pipe_and_output(sandbox):
    with sandbox.job(images.png(64, 48)) as job:
        job.inspect(MAX_PIXELS)  # the child now waits for its reservation
        fd_dir = Path(f"/proc/{job.pid}/fd")
        fds = {int(fd): os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)}
        assert len(fds) == 6, fds  # 0, 1, 2, the pipe, the output memfd, the source
        assert all(fds[n] == "/dev/null" for n in (0, 1, 2)), fds
        assert sum("socket:" in t or "pipe:" in t for t in fds.values()) == 1, fds
        assert sum("memfd:img2pdf-out" in t for t in fds.values()) == 1, fds
        # The source is mapped, not copied; its descriptor (the mapping's) is read-only.
        (src,) = [n for n, t in fds.items() if "memfd:img2pdf-src" in t]
        flags = Path(f"/proc/{job.pid}/fdinfo/{src}").read_text().split("flags:")[1].split()[0]
        assert int(flags, 8) & os.O_ACCMODE == os.O_RDONLY, flags
        maps = Path(f"/proc/{job.pid}/maps").read_text().splitlines()
        (mapped,) = [m for m in maps if "memfd:img2pdf-src" in m]
        assert mapped.split()[1] == "r--s", mapped  # read-only, shared: no private copy
        limits = limits_of(job.pid)
        assert limits["Max cpu time"] == str(math.ceil(TIMEOUT) + 1)
        # The child's own size at start + the inspection's reservation (+ 4 MiB).
        space = int(limits["Max address space"])
        status = Path(f"/proc/{job.pid}/status").read_text()
        size = int(status.split("VmSize:")[1].split()[0]) * 1024
        reserved = inspect_reservation(len(images.png(64, 48)))
        assert reserved // 2 < space - size <= reserved + 4 * 1024 * 1024
        assert limits["Max core file size"] == "0"


@pytest.mark.parametrize("phase", ["inspect", "convert"])
def test_hung_child_is_killed_at_the_timeout(quick, phase):
    job = quick.job(images.png(64, 48))
    try:
        if phase == "convert":
            info = job.inspect(MAX_PIXELS)
        os.kill(job.pid, signal.SIGSTOP)  # a decoder that never returns
        with pytest.raises(ConversionTimeout):
            if phase == "inspect":
                job.inspect(MAX_PIXELS)
            else:
                job.convert(info, 64 * 1024 * 1024)
    finally:
        job.close()
    assert gone(job.pid)
    assert zygote_children() == []


def inspect_after_signal(job, sig: signal.Signals, error: type[Exception]) -> None:
    """Stops the child, sends it `sig`, lets it go on: its inspect must raise `error`."""
    try:
        os.kill(job.pid, signal.SIGSTOP)
        os.kill(job.pid, sig)
        os.kill(job.pid, signal.SIGCONT)
        with pytest.raises(error):
            job.inspect(MAX_PIXELS)
    finally:
        job.close()


def test_crashing_decoder_is_a_clean_crash_answer(sandbox):
    job = sandbox.job(images.png(64, 48))
    inspect_after_signal(job, signal.SIGSEGV, ConversionCrashed)
    assert gone(job.pid)
    assert zygote_children() == []


def test_cpu_limit_signal_is_a_timeout_answer(sandbox):
    job = sandbox.job(images.png(64, 48))
    inspect_after_signal(job, signal.SIGXCPU, ConversionTimeout)  # what RLIMIT_CPU sends
    assert zygote_children() == []


def test_conversion_over_its_reservation_is_stopped_by_the_kernel(sandbox):
    # A lossless WebP's decoder maps its arena (~33 MB here, app.engine.vp8l)
    # at once; 4 MB cannot do. (An 8-bit alpha PNG, an interlaced one and an uncompressed,
    # 16-bit or RLE BMP now convert in less: split, decoded in bands, written in
    # strips.)
    data = images.encode(images.banded_gradient(2000, 2000, "RGBA"), "WEBP", lossless=True)
    with pytest.raises(ConversionTooLarge):
        convert(sandbox, data, reserve=4 * 1024 * 1024)
    assert zygote_children() == []
    # The zygote is unharmed: the next job works.
    assert convert(sandbox, images.jpeg(64, 48)).startswith(b"%PDF-")


@pytest.mark.parametrize(
    "make",
    [
        lambda: images.jpeg(2000, 1500),
        lambda: images.cmyk_jpeg(1500, 1500),
        lambda: images.png(1500, 1000),
        lambda: images.alpha_png(1500, 1000),
        lambda: images.la_png(1500, 1000),
        lambda: images.png16_alpha(600, 400),
        lambda: images.png_interlaced(300, 200),
        lambda: images.png_interlaced(1500, 1000),
        lambda: interlaced_palette_png(1500, 1000),
        lambda: interlaced_rgba_png(1500, 1000, depth=16),
        lambda: interlaced_rgba_png(1500, 1000, mode="L", depth=2),
        lambda: images.palette_transparent_png(1500, 1000),
        lambda: images.gif_transparent(1500, 1000),
        lambda: images.png(1500, 1000, "RGBA", exif=mirrored()),
        lambda: images.tiff(1500, 1000, "RGB", compression="tiff_lzw"),
        lambda: images.gif(1500, 1000),
        lambda: images.tiff(1500, 1000),
        lambda: images.tiff16(600, 400),
        lambda: images.tiff_alpha(1500, 1000),
        lambda: images.webp(1500, 1000),
        lambda: images.webp_alpha(1500, 1000),
        lambda: lossy_webp(3000, 2000, "RGB"),
        lambda: lossy_webp(2500, 2000, "RGBA"),
        lambda: images.encode(images.banded_gradient(3000, 2500, "RGBA"), "WEBP", lossless=True),
        lambda: hostile.gif_frame_at(1500, 1200, (3000, 2000), (1000, 700)),
        lambda: images.bmp(1500, 1000),
        lambda: images.bmp(1500, 1000, "P"),
        lambda: images.bmp(1501, 1000, "1"),
        lambda: images.bmp_rgba(1500, 1000),
        lambda: images.bmp_rle8(1500, 1000),
        lambda: images.jp2(1000, 800),
        lambda: hostile.jp2_16bit_gray(1024, 1024),
        lambda: deep_rgb_jp2(1000, 800),
        lambda: images.jpeg_with_orientation(5, 1500, 1000),
        lambda: mirrored_jpeg_with_icc(1500, 1000),
        lambda: one_row_bmp(4_000_000),
        lambda: images.encode(images.banded_gradient(1500, 1000, "RGBA"), "JPEG2000"),
        # Extreme shapes of the banded routes: one band a row, one pixel a row.
        lambda: lossy_webp(16383, 3),
        lambda: lossy_webp(3, 16383),
        lambda: lossy_webp(16383, 1, "RGB"),
        lambda: images.encode(images.banded_gradient(16383, 1, "RGBA"), "WEBP", lossless=True),
        lambda: images.encode(images.banded_gradient(1, 16383, "RGBA"), "WEBP", lossless=True),
        lambda: interlaced_rgba_png(1, 1_000_000, depth=16),
        lambda: grey_gif(65535, 1),
        lambda: grey_gif(1, 65535),
        lambda: hostile.gif_frame_at(1, 1, (65535, 300), (1, 1)),
    ],
)
def test_estimate_is_enough_under_the_kernel_limit(sandbox, make):
    """Each route converts with exactly its estimate as its address-space limit."""
    assert convert(sandbox, make()).startswith(b"%PDF-")


def deep_rgb_jp2(w: int, h: int) -> bytes:
    """16-bit RGB JPEG 2000 (embedded, no decoder), written by openjpeg."""
    import numpy as np
    import openjpeg

    rng = np.random.default_rng(5)
    return openjpeg.encode(
        rng.integers(0, 65536, (h, w, 3), dtype=np.uint16),
        bits_stored=16,
        photometric_interpretation=1,
        codec_format=1,
    )


def one_row_bmp(width: int) -> bytes:
    """32-bit BI_BITFIELDS with alpha, one row of `width` pixels (written in pieces)."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(5).integers(0, 256, width * 4, dtype=np.uint8)
    return images.bmp_rgba(width, 1, Image.frombytes("RGBA", (width, 1), pixels.tobytes()))


def mirrored_jpeg_with_icc(w: int, h: int) -> bytes:
    """EXIF orientation 7 with an ICC profile: the child embeds it (direct.embed_jpeg)."""
    from PIL import Image, ImageCms

    exif = Image.Exif()
    exif[0x0112] = 7
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return images.encode(images.photo(w, h, seed=2), "JPEG", exif=exif.tobytes(), icc_profile=icc)


def test_cut_progressive_jpeg_is_refused_within_its_estimate(sandbox):
    """No decoder holds its coefficients: 422, not the kernel's limit."""
    with pytest.raises(InvalidImage):
        convert(sandbox, hostile.truncated_progressive_cmyk_jpeg(2000, 2000))


def interlaced_palette_png(w: int, h: int) -> bytes:
    """Adam7, 8-bit palette with a tRNS chunk (filter type None): stripes of 7 colours."""
    import struct
    import zlib

    raw = bytearray()
    adam7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4)]
    for x0, y0, dx, dy in [*adam7, (1, 0, 2, 2), (0, 1, 1, 2)]:
        xs = range(x0, w, dx)
        for y in range(y0, h, dy):
            if xs:
                raw += b"\0" + bytes((x // 3 + y) % 7 for x in xs)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 1)
    plte = bytes(range(21))
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", ihdr),
            chunk(b"PLTE", plte),
            chunk(b"tRNS", b"\x00\x80"),
            chunk(b"IDAT", zlib.compress(bytes(raw))),
            chunk(b"IEND", b""),
        ]
    )


def mirrored() -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 2
    return exif.tobytes()


def test_thirty_megapixel_alpha_png_converts_in_under_120_mb():
    """The conversion process's own peak RSS (VmHWM, zygote pages included),
    under a kernel limit of exactly the estimate."""
    box = Sandbox(Limits(timeout_s=60.0, max_memory=BUDGET))
    data = noisy_rgba_png(6000, 5000)
    with box.job(data) as job:
        info = job.inspect(MAX_PIXELS)
        assert info.route == "stream"
        need = estimate_peak_bytes(info, len(data))
        assert need < 120 * 1024 * 1024
        assert job.convert_size(info, need) > 0
        assert 0 < job.peak_rss <= 120 * 1024 * 1024, job.peak_rss


def interlaced_rgba_png(w: int, h: int, mode: str = "RGBA", depth: int = 8) -> bytes:
    """Adam7 (libvips writes it: Pillow never interlaces), gradients: a file
    under MAX_SOURCE_BYTES, as the service would take it (noise would not be).
    16-bit: each sample x 257; grey under 8 bits: libvips quantises."""
    import pyvips
    from PIL import Image

    grad = Image.linear_gradient("L").resize((w, h))
    across = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize((w, h))
    im = Image.merge("RGBA", (across, grad, grad.transpose(Image.Transpose.ROTATE_180), grad))
    if mode == "L":
        im = across
    vi = pyvips.Image.new_from_memory(im.tobytes(), w, h, len(mode), "uchar")
    options = {"bitdepth": depth} if depth < 8 else {}
    if depth == 16:
        vi = (vi.cast("ushort") * 257).cast("ushort")
        vi = vi.copy(interpretation="grey16" if mode == "L" else "rgb16")
    data = vi.pngsave_buffer(interlace=True, compression=1, **options)
    assert data[24] == depth and data[28] == 1
    return data


def interlaced_rgba16_png(w: int, h: int) -> bytes:
    return interlaced_rgba_png(w, h, depth=16)


def grey_gif(w: int, h: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    im = Image.merge("RGB", [Image.effect_noise((w, h), 40).convert("L")] * 3).convert("P")
    im.save(buf, "GIF", transparency=0)
    return buf.getvalue()


def lossy_webp(w: int, h: int, mode: str = "RGBA") -> bytes:
    """Lossy, noise and gradient bands, alpha a hard edge (its plane coded
    lossless): 11.8 MB at 40 MP, under MAX_SOURCE_BYTES as the service takes it."""
    return images.encode(images.banded_gradient(w, h, mode), "WEBP", quality=80)


@pytest.mark.parametrize("make", [interlaced_rgba_png, interlaced_rgba16_png, grey_gif, lossy_webp])
def test_forty_megapixel_interlaced_png_gif_and_webp_convert_in_under_120_mb(make):
    """All were decoded whole (an RGB(A) frame: 413 MB at 40 MP, WebP 346); now in
    bands / as palette indices, under a kernel limit of exactly the estimate."""
    box = Sandbox(Limits(timeout_s=60.0, max_memory=BUDGET))
    data = make(7302, 5477)  # 39.99 MP: just under MAX_IMAGE_PIXELS
    with box.job(data) as job:
        info = job.inspect(MAX_PIXELS)
        assert info.route == "stream" and (info.adam7 or info.indexed or info.webp_bands)
        need = estimate_peak_bytes(info, len(data))
        assert need < (160 if info.webp_bands else 120) * 1024 * 1024
        assert job.convert_size(info, need) > 0
        assert 0 < job.peak_rss <= 120 * 1024 * 1024, job.peak_rss


def noisy_rgba_png(w: int, h: int) -> bytes:
    """Noise in two channels: ~1 B/px compressed (a scan; a poster export is smaller)."""
    import io

    from PIL import Image

    noise = Image.effect_noise((w, h), 20).convert("L")
    grad = Image.linear_gradient("L").resize((w, h))
    im = Image.merge("RGBA", (noise, grad, grad.transpose(Image.Transpose.ROTATE_180), grad))
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def test_truncated_progressive_cmyk_jpeg_is_invalid_not_out_of_memory(sandbox):
    data = hostile.truncated_progressive_cmyk_jpeg(1024, 1024)
    with pytest.raises(InvalidImage):
        convert(sandbox, data)
    assert zygote_children() == []


def test_a_dead_zygote_is_started_again_for_the_next_job(sandbox):
    pid = zygote_pid()
    os.kill(pid, signal.SIGKILL)
    stat = Path(f"/proc/{pid}/stat")
    while stat.read_text().split(")")[-1].split()[0] != "Z":  # dead, not yet reaped
        time.sleep(0.01)
    assert convert(sandbox, images.jpeg(64, 48)).startswith(b"%PDF-")
    assert zygote_pid() != pid
    assert zygote_children() == []


@pytest.mark.parametrize(
    ("width", "height", "mode", "depth"),
    [
        (1_000_000, 1, "RGBA", 16),
        (1_000_000, 4, "RGBA", 16),
        (1_000_000, 7, "RGBA", 8),
        (1_000_001, 3, "L", 2),
    ],
)
def test_an_interlaced_png_under_eight_rows_pays_for_its_own_rows(width, height, mode, depth):
    """Priced as 8-row bands, a 1,000,000 x 1 16-bit RGBA PNG asked 684 MiB (413 on
    every budget here) and peaked at 85 MB; now under a kernel limit of its estimate."""
    box = Sandbox(Limits(timeout_s=60.0, max_memory=BUDGET))
    data = interlaced_rgba_png(width, height, mode=mode, depth=depth)
    with box.job(data) as job:
        info = job.inspect(MAX_PIXELS)
        assert info.route == "stream" and info.adam7
        need = estimate_peak_bytes(info, len(data))
        assert need <= (height * 700 * width) // 8 + 24 * 1024 * 1024
        assert job.convert_size(info, need) > 0
        assert 0 < job.peak_rss <= need, job.peak_rss


def test_a_forty_megapixel_lossless_webp_converts_in_a_fraction_of_libwebps_frame(sandbox):
    """libwebp needed its 4 B/px ARGB frame (171 MB at 40 MP), over the 120 MB goal;
    app.engine.vp8l keeps a window, so 100 MB of reservation is plenty, and the
    estimate the service reserves stays under 140 MB."""
    width, height = 7302, 5477
    gradient = Image.linear_gradient("L").resize((width, height))
    im = Image.merge(
        "RGBA",
        [
            gradient,
            gradient.transpose(Image.Transpose.ROTATE_90).resize((width, height)),
            gradient,
            gradient.point(lambda v: v | 1),
        ],
    )
    data = images.encode(im, "WEBP", lossless=True, method=0)
    assert len(data) < 20 * 1024 * 1024  # what the service accepts
    with sandbox.job(data) as job:
        info = job.inspect(MAX_PIXELS)
        assert (info.width, info.height) == (width, height)
        assert estimate_peak_bytes(info, len(data)) < 140 * 1024 * 1024
    pdf = convert(sandbox, data, reserve=100 * 1024 * 1024)  # libwebp's frame: 160 MB
    assert pdf.startswith(b"%PDF-")
    assert zygote_children() == []
