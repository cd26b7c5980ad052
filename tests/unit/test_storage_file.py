"""LocalStorage stores a PDF from a file: copied by the kernel, renamed into place."""

from __future__ import annotations

import io
import os

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
