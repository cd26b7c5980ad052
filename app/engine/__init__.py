"""Image bytes -> one-page PDF: the conversion engine, one module per job.

img2pdf embeds JPEG/JPEG 2000 byte for byte and copies the IDAT of plain PNGs,
so the common cases never decode a pixel. A plain JPEG does not even reach
img2pdf: `direct.passthrough_jpeg` writes the same PDF from a bounded walk of its
segment headers, in the web worker itself (app.pipeline), without a fork. Every
other image that libvips can read takes the "stream" route: decoded in strips,
written as PNG-predictor deflate streams with alpha as /SMask, oriented by the
page's matrix; memory O(strip). Pillow remains for what neither handles.
Everything but the passthrough runs inside a conversion's child (app.sandbox).

Which route an image takes, and why: `routes` (a table in its docstring).

    entry points   convert.py (convert_to_pdf/convert_to_fd: dispatch to a route)
                   inspect.py (inspect_image -> ImageInfo), pricing.py
                   (estimate_peak_bytes), routes.py (route choice)
    facts          facts.py (ImageInfo, per-file facts), structure.py (byte-level
                   caps), jpeg_header.py (the worker-side JPEG walk), checks.py
                   (truncated JPEG/PNG), pillow_warnings.py
    routes         direct.py (plain JPEG/PNG written without a decoder),
                   img2pdf_route.py (img2pdf, its patches, page layout),
                   normalise.py (Pillow re-encoding), streamed.py (libvips routes:
                   16-bit/alpha/interlaced PNG, TIFF, GIF, WebP)
    stream parts   vips.py (libvips/numpy loading, strip size), pdfwriter.py (the
                   small PDF writer), png_strips.py (filtered strips from IDAT),
                   adam7.py (interlaced PNG), gif.py (indexed GIF)

Nothing here imports numpy or pyvips at import time (vips.load does, in the
conversion processes only).
"""
