import re
import uuid

import pytest

from app.storage import (
    LocalStorage,
    content_disposition,
    download_filename,
    is_pdf_name,
    new_pdf_name,
)


def test_new_names_are_uuid4_pdfs():
    names = {new_pdf_name() for _ in range(100)}
    assert len(names) == 100
    for name in names:
        assert is_pdf_name(name)
        assert uuid.UUID(name[:-4]).version == 4


@pytest.mark.parametrize(
    "name",
    [
        "../etc/passwd",
        "x.pdf",
        f"{uuid.uuid4()}.PDF",
        f"{uuid.uuid4()}.pdf/..",
        f"../{uuid.uuid4()}.pdf",
        f"{uuid.uuid1()}.pdf",
        f"{uuid.uuid4()}.pdf\n",
        "",
    ],
)
def test_only_minted_names_are_accepted(name):
    assert not is_pdf_name(name)


def test_local_storage_writes_and_serves_only_its_names(tmp_path):
    store = LocalStorage(tmp_path / "data", "http://localhost:9999/")
    name = new_pdf_name()
    url = store.save_pdf(b"%PDF-1.7 test", name, "cat.pdf")
    assert url == f"http://localhost:9999/files/{name}"
    assert (tmp_path / "data" / name).read_bytes() == b"%PDF-1.7 test"
    assert store.local_path(name) == tmp_path / "data" / name
    assert store.local_path("../" + name) is None
    assert store.local_path(new_pdf_name()) is None
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".upload-")]
    with pytest.raises(ValueError):
        store.save_pdf(b"x", "../evil.pdf", "evil.pdf")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com/images/cat.png", "cat.pdf"),
        ("https://example.com/a/b/holiday photo.jpeg?x=1#frag", "holiday_photo.pdf"),
        ("https://example.com/", "converted.pdf"),
        ("https://example.com", "converted.pdf"),
        ('https://example.com/"quote";.png', "quote.pdf"),
        ("https://example.com/%E2%98%83.png", "E2_98_83.pdf"),
    ],
)
def test_download_filename_is_friendly_and_header_safe(url, expected):
    assert download_filename(url) == expected
    header = content_disposition(download_filename(url))
    assert re.fullmatch(r'inline; filename="[A-Za-z0-9._-]+"; filename\*=UTF-8\'\'[^\s"]+', header)


def test_local_storage_keeps_the_download_name(tmp_path):
    store = LocalStorage(tmp_path, "http://localhost:4321")
    name = new_pdf_name()
    store.save_pdf(b"%PDF-1.4 x", name, download_filename("https://h/x/cat photo.png"))
    assert store.filename_for(name) == "cat_photo.pdf"
    other = new_pdf_name()
    store.save_pdf(b"%PDF-1.4 y", other, 'evil"\r\nname.pdf')  # never stored as such
    assert store.filename_for(other) is None
    assert store.filename_for("../x.pdf") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, f"{name}.filename", other])


def test_only_the_local_backend_has_files_the_app_serves(tmp_path):
    """Routes ask the protocol (`local_path`), never which backend it is."""
    from app.storage import GCSStorage

    local = LocalStorage(tmp_path / "data", "http://localhost:9999")
    name = new_pdf_name()
    local.save_pdf(b"%PDF-1.7 test", name, "cat.pdf")
    assert local.local_path(name) == tmp_path / "data" / name
    gcs = GCSStorage.__new__(GCSStorage)  # no client: the answer needs none
    assert gcs.local_path(name) is None
    assert gcs.filename_for(name) is None
