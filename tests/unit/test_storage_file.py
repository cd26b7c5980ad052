"""LocalStorage stores a PDF from a file: copied by the kernel, renamed into place."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from app.storage import LocalStorage, new_pdf_name


def memfd_with(data: bytes) -> io.FileIO:
    fd = os.memfd_create("pdf")
    os.write(fd, data)
    return io.FileIO(fd, "rb")


def test_the_first_size_bytes_of_the_file_are_stored(tmp_path):
    store = LocalStorage(tmp_path, "http://127.0.0.1:1")
    data = os.urandom(3 * 1024 * 1024 + 7)
    name = new_pdf_name()
    with memfd_with(data + b"trailing bytes past the PDF") as pdf:
        url = store.save_pdf_file(pdf, len(data), name, "cat.pdf")
    assert url == f"http://127.0.0.1:1/files/{name}"
    assert (tmp_path / name).read_bytes() == data
    assert store.filename_for(name) == "cat.pdf"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".upload-")]


def test_a_file_shorter_than_its_size_stores_nothing(tmp_path):
    store = LocalStorage(tmp_path, "http://127.0.0.1:1")
    name = new_pdf_name()
    with memfd_with(b"%PDF-1.5 short") as pdf, pytest.raises(OSError):
        store.save_pdf_file(pdf, 1000, name, "cat.pdf")
    assert store.local_path(name) is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".upload-")]


def test_an_empty_pdf_is_an_empty_file(tmp_path):
    store = LocalStorage(tmp_path, "http://127.0.0.1:1")
    name = new_pdf_name()
    with memfd_with(b"") as pdf:
        store.save_pdf_file(pdf, 0, name, "x.pdf")
    assert (tmp_path / name).read_bytes() == b""


def test_a_file_shorter_than_its_size_leaves_no_download_name_either(tmp_path):
    store = LocalStorage(tmp_path, "http://127.0.0.1:1")
    name = new_pdf_name()
    with memfd_with(b"%PDF-1.5 short") as pdf, pytest.raises(OSError):
        store.save_pdf_file(pdf, 1000, name, "cat.pdf")
    assert list(tmp_path.iterdir()) == []


def written(data: bytes):
    def write(fd: int) -> int:
        os.write(fd, data)
        return len(data)

    return write


def test_a_written_pdf_is_stored_whole_with_its_name(tmp_path):
    store = LocalStorage(tmp_path, "http://127.0.0.1:1")
    data = os.urandom(3 * 1024 * 1024 + 7)
    name = new_pdf_name()
    url = store.save_pdf_written(written(data), name, "cat.pdf")
    assert url == f"http://127.0.0.1:1/files/{name}"
    assert (tmp_path / name).read_bytes() == data
    assert (tmp_path / name).stat().st_mode & 0o777 == 0o644
    assert store.filename_for(name) == "cat.pdf"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name, f"{name}.filename"]


def test_an_empty_written_pdf_is_an_empty_file(tmp_path):
    store = LocalStorage(tmp_path, "http://127.0.0.1:1")
    name = new_pdf_name()
    assert store.save_pdf_written(written(b""), name, "x.pdf")
    assert (tmp_path / name).read_bytes() == b""


def test_a_writer_that_declines_stores_nothing(tmp_path):
    store = LocalStorage(tmp_path, "http://127.0.0.1:1")

    def decline(fd: int) -> None:
        os.write(fd, b"%PDF-1.5 half of a PDF")
        return None

    assert store.save_pdf_written(decline, new_pdf_name(), "cat.pdf") is None
    assert list(tmp_path.iterdir()) == []


def test_a_writer_that_fails_half_way_leaves_no_partial_file(tmp_path):
    store = LocalStorage(tmp_path, "http://127.0.0.1:1")

    def fail(fd: int) -> int:
        os.write(fd, b"%PDF-1.5 " + b"\0" * 1_000_000)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        store.save_pdf_written(fail, new_pdf_name(), "cat.pdf")
    assert list(tmp_path.iterdir()) == []


def test_a_written_pdf_needs_a_minted_name(tmp_path):
    store = LocalStorage(tmp_path, "http://127.0.0.1:1")
    with pytest.raises(ValueError):
        store.save_pdf_written(written(b"%PDF"), "../x.pdf", "cat.pdf")
    assert list(tmp_path.iterdir()) == []


def test_a_pdf_that_cannot_be_renamed_into_place_leaves_no_download_name(tmp_path):
    store = LocalStorage(tmp_path, "http://127.0.0.1:1")
    name = new_pdf_name()
    (tmp_path / name).mkdir()  # the rename onto it fails
    with pytest.raises(OSError):
        store.save_pdf_written(written(b"%PDF-1.5 whole"), name, "cat.pdf")
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_a_pdf_being_written_is_not_a_pdf_to_a_sweep_of_stored_ones(tmp_path):
    """Operators (and the load harness) delete stored PDFs with `*.pdf` globs, which
    match dotfiles too: a temporary file named like a PDF vanished mid-write (503)."""
    store = LocalStorage(tmp_path, "http://127.0.0.1:1")
    fd, tmp = store._create(new_pdf_name())
    os.close(fd)
    assert Path(tmp).parent == tmp_path and Path(tmp).name.startswith(".upload-")
    assert list(tmp_path.glob("*.pdf")) == []


def test_a_second_store_of_a_name_fails_and_leaves_the_first_whole(tmp_path):
    """Names are fresh uuids, so this is a bug elsewhere if it happens: the second
    store must fail without taking the first one's download name with it."""
    store = LocalStorage(tmp_path, "http://127.0.0.1:1")
    name = new_pdf_name()
    store.save_pdf_written(written(b"%PDF-1.5 first"), name, "first.pdf")
    with pytest.raises(FileExistsError):
        store.save_pdf_written(written(b"%PDF-1.5 second"), name, "second.pdf")
    assert (tmp_path / name).read_bytes() == b"%PDF-1.5 first"
    assert store.filename_for(name) == "first.pdf"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name, f"{name}.filename"]
