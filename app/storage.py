"""Where PDFs go: a GCS bucket in the cloud, a local folder everywhere else.

Both backends answer the same question: store these bytes under this name and
tell me the URL a client downloads them from. The route never knows which.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import quote, urlsplit

from app.fdio import write_all
from app.settings import Settings

PDF_NAME_RE = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\.pdf$"
)
CACHE_CONTROL = "public, max-age=86400"


def new_pdf_name() -> str:
    return f"{uuid.uuid4()}.pdf"


def is_pdf_name(name: str) -> bool:
    """Only names we mint are ever served: no paths, no traversal, no guessing."""
    return bool(PDF_NAME_RE.fullmatch(name))


def download_filename(source_url: str) -> str:
    """A friendly `cat.pdf` from `https://host/x/cat.png`, safe for a header."""
    path = urlsplit(source_url).path if "://" in source_url else source_url
    stem = path.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:80]
    return f"{stem or 'converted'}.pdf"


def content_disposition(filename: str) -> str:
    return f"inline; filename=\"{filename}\"; filename*=UTF-8''{quote(filename)}"


class Storage(Protocol):
    def save_pdf(self, pdf: bytes, name: str, filename: str) -> str:
        """Store `pdf` as `name` and return the URL clients download it from."""
        ...

    def save_pdf_file(self, pdf: BinaryIO, size: int, name: str, filename: str) -> str:
        """`save_pdf` for the first `size` bytes of a file (read from its start),
        so the PDF never has to be in this process's memory."""
        ...

    def save_pdf_written(
        self, write: Callable[[int], int | None], name: str, filename: str
    ) -> str | None:
        """`save_pdf_file` for a PDF that `write(fd)` first writes into a fresh file
        and sizes, all in the caller's thread (one hop for conversion and store).
        None when `write` returns None (it wrote nothing worth keeping): nothing
        is stored."""
        ...

    def local_path(self, name: str) -> Path | None:
        """The file the app itself serves at /files/`name`; None when the backend
        serves its PDFs (GCS) or there is no such PDF."""
        ...

    def filename_for(self, name: str) -> str | None:
        """The download name kept next to a PDF the app serves, if any."""
        ...


_FILENAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,84}\.pdf$")


class LocalStorage:
    """The embedded default: files under DATA_DIR, served by the app at /files/.

    The download name (from the source, as GCS keeps it in Content-Disposition)
    sits next to the PDF in `<uuid>.pdf.filename`.
    """

    def __init__(self, data_dir: Path, public_base_url: str):
        self.data_dir = data_dir
        self.public_base_url = public_base_url.rstrip("/")
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def save_pdf(self, pdf: bytes, name: str, filename: str) -> str:
        self.save_pdf_written(lambda fd: write_all(fd, pdf), name, filename)
        return f"{self.public_base_url}/files/{name}"

    def save_pdf_file(self, pdf: BinaryIO, size: int, name: str, filename: str) -> str:
        if not is_pdf_name(name):
            raise ValueError(f"refusing to store {name!r}")
        self._write_from(self.data_dir / name, pdf.fileno(), size, filename)
        return f"{self.public_base_url}/files/{name}"

    def save_pdf_written(
        self, write: Callable[[int], int | None], name: str, filename: str
    ) -> str | None:
        """Written straight into a temporary file in the folder, then renamed.

        It went through a memfd and `sendfile` (2 ms more CPU for a 5.8 MB PDF),
        because this direct write once measured worse in the running service:
        that was its single multi-megabyte write() call (app/fdio.py)."""
        if not is_pdf_name(name):
            raise ValueError(f"refusing to store {name!r}")
        path = self.data_dir / name
        fd, tmp = self._create(name)
        try:
            try:
                size = write(fd)
                if size is not None:
                    os.fchmod(fd, 0o644)  # whatever the umask
            finally:
                os.close(fd)
            if size is None:
                os.unlink(tmp)
                return None
            self._commit(tmp, path, filename)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return f"{self.public_base_url}/files/{name}"

    def _create(self, name: str) -> tuple[int, str]:
        """A new temporary file for the PDF `name` (a fresh uuid, so O_EXCL never
        meets an old one): what mkstemp does, without its random name. It ends in
        `.part`, not `.pdf`: a sweep of stored PDFs (`*.pdf`, which in pathlib and
        find(1) also matches dotfiles) must never take a PDF still being written."""
        tmp = f"{self.data_dir}/.upload-{name}.part"
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), tmp

    def _commit(self, tmp: str, path: Path, filename: str) -> None:
        """Rename a complete PDF into place, its download name first: a PDF that
        can be served always has its name, and a failed write leaves neither.
        The name file is written in place: nothing reads it before the PDF exists."""
        named = None
        try:
            if _FILENAME_RE.fullmatch(filename):
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                fd = os.open(f"{path}.filename", flags, 0o644)
                named = f"{path}.filename"  # ours to remove only once we made it
                try:
                    os.fchmod(fd, 0o644)  # whatever the umask
                    if os.write(fd, filename.encode()) != len(filename):  # <= 88 bytes
                        raise OSError(f"short write of {named}")
                finally:
                    os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            if named is not None:
                Path(named).unlink(missing_ok=True)
            raise

    def _write_from(self, path: Path, src: int, size: int, filename: str) -> None:
        """Copy `size` bytes of `src` in the kernel (sendfile), then rename into place."""
        fd, tmp = self._create(path.name)
        try:
            with os.fdopen(fd, "wb") as fh:
                offset = 0
                while offset < size:
                    sent = os.sendfile(fh.fileno(), src, offset, size - offset)
                    if sent == 0:
                        raise OSError(f"PDF file ended at {offset} of {size} bytes")
                    offset += sent
            os.chmod(tmp, 0o644)
            self._commit(tmp, path, filename)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def local_path(self, name: str) -> Path | None:
        if not is_pdf_name(name):
            return None
        path = self.data_dir / name
        return path if path.is_file() else None

    def filename_for(self, name: str) -> str | None:
        """The download name stored with `name`, if any."""
        if not is_pdf_name(name):
            return None
        try:
            text = (self.data_dir / f"{name}.filename").read_text("ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return text if _FILENAME_RE.fullmatch(text) else None


class GCSStorage:
    """A uniform-access bucket whose objects are public-read through bucket IAM.

    One client per process (created at start, reused by every request). Objects
    are created with `if_generation_match=0`, so nothing is ever overwritten.
    """

    PUBLIC_BASE = "https://storage.googleapis.com"

    def __init__(
        self,
        bucket: str,
        project: str | None,
        url_mode: str,
        signed_ttl_s: int,
        timeout_s: float = 10.0,
    ):
        from google.cloud import storage  # imported here: local mode never pays for it
        from google.cloud.storage.retry import DEFAULT_RETRY

        self.timeout_s = timeout_s
        self._retry = DEFAULT_RETRY.with_timeout(timeout_s)

        self.client = storage.Client(project=project)
        self.bucket = self.client.bucket(bucket)
        self.url_mode = url_mode
        self.signed_ttl_s = signed_ttl_s

    def save_pdf(self, pdf: bytes, name: str, filename: str) -> str:
        blob = self.bucket.blob(name)
        blob.content_disposition = content_disposition(filename)
        blob.cache_control = CACHE_CONTROL
        # Safe to retry: the precondition makes a repeated create a no-op 412.
        # The whole upload must end well inside the load balancer's 30 s.
        blob.upload_from_string(
            pdf,
            content_type="application/pdf",
            if_generation_match=0,
            timeout=self.timeout_s,
            retry=self._retry,
        )
        return self._url(blob, name)

    def save_pdf_file(self, pdf: BinaryIO, size: int, name: str, filename: str) -> str:
        blob = self.bucket.blob(name)
        blob.content_disposition = content_disposition(filename)
        blob.cache_control = CACHE_CONTROL
        # Read from the file as it is sent: a resumable upload above 8 MB (the
        # library's multipart limit), rewound by the library on a retry.
        pdf.seek(0)
        blob.upload_from_file(
            pdf,
            size=size,
            content_type="application/pdf",
            if_generation_match=0,
            timeout=self.timeout_s,
            retry=self._retry,
        )
        return self._url(blob, name)

    def save_pdf_written(
        self, write: Callable[[int], int | None], name: str, filename: str
    ) -> str | None:
        """Written to a memfd, then uploaded from it (the bucket has no file to write)."""
        with io.FileIO(os.memfd_create("img2pdf-pdf", os.MFD_CLOEXEC), "rb") as pdf:
            size = write(pdf.fileno())
            if size is None:
                return None
            return self.save_pdf_file(pdf, size, name, filename)

    def local_path(self, name: str) -> Path | None:
        return None  # clients download from the bucket, never through the app

    def filename_for(self, name: str) -> str | None:
        return None  # kept in the object's Content-Disposition

    def _url(self, blob, name: str) -> str:
        if self.url_mode == "signed":
            return self._signed_url(blob)
        return f"{self.PUBLIC_BASE}/{self.bucket.name}/{name}"

    def _signed_url(self, blob) -> str:
        """V4 signed URL; on GCE this signs through IAM signBlob (no key file)."""
        creds = self.client._credentials
        kwargs = {}
        if not hasattr(creds, "sign_bytes") or getattr(creds, "token", None) is None:
            import google.auth.transport.requests

            creds.refresh(google.auth.transport.requests.Request())
        if getattr(creds, "service_account_email", None) and getattr(creds, "token", None):
            kwargs = {
                "service_account_email": creds.service_account_email,
                "access_token": creds.token,
            }
        return blob.generate_signed_url(
            version="v4",
            expiration=dt.timedelta(seconds=self.signed_ttl_s),
            method="GET",
            **kwargs,
        )


def make_storage(settings: Settings) -> Storage:
    if settings.pdf_bucket:
        return GCSStorage(
            settings.pdf_bucket,
            settings.project_id,
            settings.url_mode,
            settings.signed_url_ttl_s,
            settings.storage_timeout_s,
        )
    return LocalStorage(settings.data_dir, settings.public_base_url)
