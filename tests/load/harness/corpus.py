"""The request mix and its source files: made once, cached by CORPUS_VERSION."""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.images import cutout, encode, non_image, photo, pixel_bomb_png, screenshot

CORPUS_VERSION = "v1"


@dataclass(frozen=True)
class Kind:
    """One kind of request in the mix: which source, how often, what answers are right."""

    name: str
    weight: float  # percent of the mix
    path: str  # on the source server ("" = unreachable)
    expect: tuple[int, ...]
    good: bool  # a valid image the service should convert


JPEG_SIZES = {1: (1152, 864), 2: (1632, 1224), 4: (2304, 1728), 8: (3264, 2448), 12: (4000, 3000)}

# 70 % JPEG (1-12 MP, smaller ones commoner), 20 % PNG, 10 % bad inputs.
MIX = (
    Kind("jpeg-1mp", 18, "/jpeg-1mp.jpg", (200,), True),
    Kind("jpeg-2mp", 16, "/jpeg-2mp.jpg", (200,), True),
    Kind("jpeg-4mp", 14, "/jpeg-4mp.jpg", (200,), True),
    Kind("jpeg-8mp", 12, "/jpeg-8mp.jpg", (200,), True),
    Kind("jpeg-12mp", 10, "/jpeg-12mp.jpg", (200,), True),
    Kind("png-screenshot", 10, "/png-screenshot.png", (200,), True),
    Kind("png-photo-2mp", 5, "/png-photo.png", (200,), True),
    Kind("png-alpha-1.4mp", 5, "/png-alpha.png", (200,), True),
    Kind("bad-html", 3, "/not-an-image.html", (415,), False),
    Kind("bad-unreachable", 3, "", (502,), False),
    # 20 MiB past the cap, half of them chunked: the service reads the whole cap
    # before it can say 413. Past capacity its 0.5 CPU may not read that within
    # SOURCE_TOTAL_TIMEOUT / SOURCE_MIN_RATE, and 504 is then the documented answer.
    Kind("bad-too-large-bytes", 2, "/too-large.jpg", (413, 504), False),
    Kind("bad-pixel-bomb", 2, "/pixel-bomb.png", (413,), False),
)
# The worst allowed input for memory: big RGBA PNGs take img2pdf's alpha path
# (~11 B/pixel): eight at once would pass 1 GiB without admission. (16 MP needs
# more than the whole default budget and gets 413 at once: not a memory test.)
WORST_MIX = (Kind("png-alpha-8mp", 100, "/png-alpha-8mp.png", (200,), True),)


def corpus_dir() -> Path:
    for base in (Path("/var/cache/img2pdf-tests"), Path(tempfile.gettempdir()) / "img2pdf-tests"):
        with contextlib.suppress(OSError):
            target = base / f"loadtest-{CORPUS_VERSION}"
            target.mkdir(parents=True, exist_ok=True)
            probe = target / ".writable"
            probe.touch()
            return target
    raise RuntimeError("no writable cache directory for the image corpus")


def build_corpus(directory: Path) -> dict[str, Path]:
    """Write every source file once; later runs reuse them (keyed by CORPUS_VERSION)."""
    makers = {
        f"jpeg-{mp}mp.jpg": (lambda w=w, h=h, s=mp: encode(photo(w, h, s), "JPEG", quality=85))
        for mp, (w, h) in JPEG_SIZES.items()
    }
    makers.update(
        {
            "png-screenshot.png": lambda: encode(screenshot(1920, 1080, 7), "PNG"),
            "png-photo.png": lambda: encode(photo(1600, 1200, 8), "PNG"),
            "png-alpha.png": lambda: encode(cutout(1200, 1200, 9), "PNG"),
            "png-alpha-8mp.png": lambda: encode(cutout(2828, 2828, 10, grain=0), "PNG"),
            "not-an-image.html": non_image,
            "pixel-bomb.png": pixel_bomb_png,
        }
    )
    files = {}
    for name, make in makers.items():
        path = directory / name
        if not path.exists():
            tmp = path.with_suffix(".part")
            tmp.write_bytes(make())
            tmp.replace(path)
        files["/" + name] = path
    return files
