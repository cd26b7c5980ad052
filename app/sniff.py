"""Recognise image formats from their first bytes.

Clients and servers lie in Content-Type; magic bytes do not. Knowing the kind
from the first few bytes also lets a download of a non-image stop early.
"""

from __future__ import annotations

SNIFF_BYTES = 32

_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"II*\x00", 0, "tiff"),
    (b"MM\x00*", 0, "tiff"),
    (b"BM", 0, "bmp"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", 0, "jp2"),
    (b"\xff\x4f\xff\x51", 0, "jp2"),
)


def sniff_image_type(head: bytes) -> str | None:
    """Return jpeg/png/gif/tiff/bmp/webp/jp2 for a known signature, else None."""
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    for magic, offset, kind in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return kind
    return None


def enough_to_sniff(head: bytes) -> bool:
    """True once `head` is long enough that sniff_image_type's answer is final."""
    return len(head) >= SNIFF_BYTES
