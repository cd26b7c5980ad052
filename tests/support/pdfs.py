"""Reading back a converted one-page PDF: its image's samples, its rendered page."""

from __future__ import annotations

import io

import numpy as np
import pikepdf
import pypdfium2 as pdfium


def image_samples(pdf: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    """The page's image `/Im0` decoded as RGB, and its `/SMask` if it has one."""
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        image = doc.pages[0].Resources.XObject.Im0
        rgb = np.asarray(pikepdf.PdfImage(image).as_pil_image().convert("RGB"))
        alpha = None
        if "/SMask" in image:
            alpha = np.asarray(pikepdf.PdfImage(image.SMask).as_pil_image())
    return rgb, alpha


def rendered_at_width(pdf: bytes, width: int) -> np.ndarray:
    """The page rendered by pdfium `width` device pixels wide (one per image pixel
    for a page that shows the image whole; pages under 3 pt are scaled up), RGB."""
    doc = pdfium.PdfDocument(pdf)
    try:
        page = doc[0]
        return np.asarray(page.render(scale=width / page.get_width()).to_pil().convert("RGB"))
    finally:
        doc.close()
