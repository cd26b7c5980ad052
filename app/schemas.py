"""The API's request and response bodies, and how its errors are documented.

Pydantic models only: what a client sends and gets back, with the examples and
descriptions /docs shows. Validation failures become 422 `invalid_request` in
app/handlers.py.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.pages import PageSize

EXAMPLE_SOURCE = "https://example.com/cat.png"
EXAMPLE_SOURCES = ["https://example.com/page-1.jpg", "https://example.com/page-2.png"]
EXAMPLE_PDF = "https://storage.googleapis.com/img2pdf-pdfs/0b7c6a52-3d1e-4f4e-9a7b-2f0c1d2e3f40.pdf"
PAGE_SIZE_HELP = (
    "`image` (default): each page is the image's own size. `A4` or `Letter`: portrait"
    " paper, the image scaled up or down to fit and centred."
)
SourceUrl = Annotated[str, Field(min_length=1, max_length=2048)]


def parse_page_size(value: object) -> PageSize | None:
    """`image`, `A4` or `Letter` in any case and with blanks around; None otherwise.
    The JSON body and the upload form both read `page_size` through this."""
    if isinstance(value, str):
        return {p.value.lower(): p for p in PageSize}.get(value.strip().lower())
    return None


class ConvertRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"source_url": EXAMPLE_SOURCE},
                {"source_urls": EXAMPLE_SOURCES, "page_size": "A4"},
            ]
        }
    )

    source_url: SourceUrl | None = Field(
        default=None,
        description="http(s) URL of a JPEG, PNG, GIF, TIFF, WebP, BMP or JPEG 2000 image.",
    )
    source_urls: list[SourceUrl] | None = Field(
        default=None,
        min_length=1,
        description="Instead of source_url: several image URLs (1 to MAX_PAGES, default 20)"
        " -> one PDF with one page per image, in this order.",
    )
    page_size: PageSize = Field(default=PageSize.image, description=PAGE_SIZE_HELP)

    @field_validator("page_size", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return parse_page_size(value) or value

    @model_validator(mode="after")
    def _one_of(self) -> ConvertRequest:
        if (self.source_url is None) == (self.source_urls is None):
            raise ValueError("send either source_url or source_urls")
        return self


class ConvertResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"source_url": EXAMPLE_SOURCE, "converted_url": EXAMPLE_PDF},
                {
                    "source_url": EXAMPLE_SOURCES[0],
                    "source_urls": EXAMPLE_SOURCES,
                    "converted_url": EXAMPLE_PDF,
                },
            ]
        }
    )

    source_url: str = Field(description="The source URL exactly as sent (the first of a list).")
    source_urls: list[str] | None = Field(
        default=None, description="Only for a list request: the URLs as sent, one page each."
    )
    converted_url: str = Field(description="Where to download the PDF.")


class UploadResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"source_files": ["page-1.jpg", "page-2.png"], "converted_url": EXAMPLE_PDF}
            ]
        }
    )

    source_files: list[str] = Field(description="The uploaded file names, one page each, in order.")
    converted_url: str = Field(description="Where to download the PDF.")


class Limits(BaseModel):
    max_pages: int = Field(description="Images per request (URL list or upload).")
    max_upload_bytes: int = Field(description="Total size of one upload.")
    max_source_bytes: int = Field(description="Size of one image file.")
    max_image_pixels: int = Field(description="Pixels of one image (width x height).")


class ErrorBody(BaseModel):
    detail: str
    code: str
    item: int | None = Field(
        default=None, description="Which image (1-based) failed, when several were sent."
    )


ERROR_RESPONSES = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "URL not allowed (scheme, credentials, port, or a non-public address).",
        413: "Source too large (bytes or pixels).",
        415: "Not a supported image.",
        422: "Malformed request, or a corrupt image.",
        502: "Source unreachable or answered an error.",
        429: "Too many requests from this client (see Retry-After).",
        503: "Busy (see Retry-After) or storage unavailable.",
        504: "Source too slow.",
    }.items()
}

# The upload's form, which FastAPI cannot describe from a model: the route reads
# the multipart body itself (app/uploads.py), with its limits enforced as it arrives.
UPLOAD_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "Image files, one page each, in this order"
                            " (1 to MAX_PAGES, default 20; MAX_UPLOAD_BYTES in total).",
                        },
                        "page_size": {
                            "type": "string",
                            "enum": [p.value for p in PageSize],
                            "default": PageSize.image.value,
                            "description": "`image`, `A4` or `Letter` (image fitted, centred).",
                        },
                    },
                },
                "examples": {
                    "two_pages_on_a4": {
                        "summary": "Two photos on A4 paper",
                        "value": {"files": ["page-1.jpg", "page-2.png"], "page_size": "A4"},
                    }
                },
            }
        },
    }
}
