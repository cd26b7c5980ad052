"""Join one-page PDFs into one document, optionally on a fixed paper size.

Each image is converted on its own by `app.engine` (the single-URL path, with
all its normalisation and checks), then the pages are joined here with pikepdf.
pikepdf copies the image streams as they are, so a JPEG stays byte for byte
what the client sent, and every page keeps its own EXIF rotation (`/Rotate`),
which one `img2pdf.convert(*images)` call could not give (one rotation per call).

Paper sizes use img2pdf's own layout function (`FitMode.into`: scaled up or
down to fit, aspect kept); the page is then placed centred as a form XObject,
which carries the original page's `/Rotate` and `/UserUnit` with it.
"""

from __future__ import annotations

import io
from enum import StrEnum

import img2pdf
import pikepdf

from app.engine.pdfwriter import PRODUCER


class PageSize(StrEnum):
    image = "image"
    A4 = "A4"
    Letter = "Letter"


# Portrait (width, height) in PDF points.
PAPER_PT: dict[PageSize, tuple[float, float]] = {
    PageSize.A4: (img2pdf.mm_to_pt(210), img2pdf.mm_to_pt(297)),
    PageSize.Letter: (img2pdf.in_to_pt(8.5), img2pdf.in_to_pt(11)),
}

# pikepdf reads the inputs lazily from their buffers and writes one output:
# about twice the PDFs' bytes, plus bookkeeping.
_JOIN_OVERHEAD = 8 * 1024 * 1024


def join_peak_bytes(pdf_sizes: list[int]) -> int:
    """Memory `join_pages` needs on top of the input PDFs it is given."""
    return sum(pdf_sizes) + _JOIN_OVERHEAD


def visible_size(page: pikepdf.Page) -> tuple[float, float]:
    """Width and height as a viewer shows the page (after /Rotate and /UserUnit)."""
    box = page.mediabox
    unit = float(page.obj.get(pikepdf.Name.UserUnit, 1))
    width = abs(float(box[2]) - float(box[0])) * unit
    height = abs(float(box[3]) - float(box[1])) * unit
    if int(page.obj.get(pikepdf.Name.Rotate, 0)) % 180:
        width, height = height, width
    return width, height


def _place_on_paper(out: pikepdf.Pdf, page: pikepdf.Page, paper: tuple[float, float]) -> None:
    width, height = visible_size(page)
    # img2pdf's layout function works in pixels at a dpi; at 72 dpi a pixel is a point.
    layout = img2pdf.get_layout_fun(paper, fit=img2pdf.FitMode.into)
    page_w, page_h, img_w, img_h = layout(width, height, (72.0, 72.0))
    x, y = (page_w - img_w) / 2, (page_h - img_h) / 2
    sheet = out.add_blank_page(page_size=(page_w, page_h))
    sheet.add_overlay(page, pikepdf.Rectangle(x, y, x + img_w, y + img_h), push_stack=False)


def join_pages(pdfs: list[bytes], page_size: PageSize = PageSize.image) -> bytes:
    """One PDF with the first page of each input, in order."""
    if len(pdfs) == 1 and page_size == PageSize.image:
        return pdfs[0]  # exactly what the single-image path produces
    sources = [pikepdf.open(io.BytesIO(data)) for data in pdfs]
    try:
        with pikepdf.new() as out:
            for src in sources:
                page = src.pages[0]
                if page_size == PageSize.image:
                    out.pages.append(page)
                else:
                    _place_on_paper(out, page, PAPER_PT[page_size])
            out.docinfo[pikepdf.Name.Producer] = PRODUCER
            out.docinfo[pikepdf.Name.Creator] = PRODUCER
            buf = io.BytesIO()
            out.save(buf, deterministic_id=True)
            return buf.getvalue()
    finally:
        for src in sources:
            src.close()
