import pytest

from app.sniff import sniff_image_type


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "png"),
        (b"GIF89a\x01\x00", "gif"),
        (b"GIF87a\x01\x00", "gif"),
        (b"II*\x00\x08\x00", "tiff"),
        (b"MM\x00*\x00\x00", "tiff"),
        (b"BM\x00\x00", "bmp"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "jp2"),
        (b"\xff\x4f\xff\x51\x00", "jp2"),
    ],
)
def test_known_signatures(head, kind):
    assert sniff_image_type(head) == kind


@pytest.mark.parametrize(
    "head",
    [b"", b"<svg xmlns=", b"%PDF-1.7", b"RIFF\x00\x00\x00\x00WAVE", b"<html>", b"\x00" * 32],
)
def test_everything_else_is_unknown(head):
    assert sniff_image_type(head) is None
