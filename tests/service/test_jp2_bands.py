"""A 30 MP JPEG 2000 with alpha converts on the default memory budget.

Pillow's decode held openjpeg's int32 samples (24.5 B/px): anything above
~7 MP was refused with 413. app.engine.jp2_bands decodes it in bands.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from app.engine.inspect import inspect_image
from app.engine.pricing import estimate_peak_bytes
from app.settings import Settings
from tests.service.conftest import open_pdf
from tests.support import images
from tests.support.servers import http

W, H = 6000, 5000


def alpha() -> Image.Image:
    """Clear on one side, opaque on the other."""
    return Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize((W, H))


def poster() -> bytes:
    """6000x5000 RGBA: a grey gradient from top to bottom under `alpha`;
    lossy (9/7, one layer at 1:40), so it is small on the wire."""
    grad = Image.linear_gradient("L").resize((W, H))
    im = Image.merge("RGBA", (grad, grad, grad, alpha()))
    return images.encode(im, "JPEG2000", irreversible=True, quality_layers=[40])


def test_a_thirty_megapixel_rgba_jpeg2000_converts(service, source):
    data = poster()
    settings = Settings.from_env({})
    assert len(data) <= settings.max_source_bytes
    info = inspect_image(data, settings.max_image_pixels)
    assert info.route == "jp2-bands"
    # Priced as Pillow's decode (~1 GB at 30 MP) this was 413 on every request.
    assert estimate_peak_bytes(info, len(data)) <= settings.worker_memory_budget
    resp = service.post(source.add_bytes("/jp2/poster.jp2", data), timeout=120)
    assert resp.status == 200, resp.body
    pdf = open_pdf(http("GET", resp.json()["converted_url"]).body)
    (image,) = pdf.pages[0].get_images().values()
    assert (int(image.Width), int(image.Height)) == (W, H)
    assert image.ColorSpace == "/DeviceRGB" and "/SMask" not in image
    # Flattened onto white: where alpha is 0 the page is paper, where it is
    # 255 the colour (the gradient's ~128 grey, across the middle row).
    rows = np.frombuffer(image.read_bytes(), np.uint8).reshape(H, W, 3)
    middle = np.asarray(alpha())[H // 2]
    clear, opaque = int(np.argmin(middle)), int(np.argmax(middle))
    assert rows[H // 2, clear].min() >= 250
    assert 100 <= rows[H // 2, opaque].min() <= rows[H // 2, opaque].max() <= 156
