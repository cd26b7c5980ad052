"""What a person does on the page: paste a URL, upload files, see errors."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from tests.support import images
from tests.web.conftest import open_pdf, page_sizes, shot


def download_pdf(page: Page, tmp_path: Path) -> bytes:
    with page.expect_download() as info:
        page.get_by_role("link", name="Download PDF").click()
    target = tmp_path / info.value.suggested_filename
    info.value.save_as(target)
    return target.read_bytes()


def test_page_loads_offline_and_says_the_limits(page: Page, service):
    expect(page).to_have_title("Image to PDF")
    expect(page.locator("#limits")).to_contain_text("Up to 20 images")
    # Only the service's own origin is ever asked for anything.
    loaded = page.evaluate("performance.getEntries().map(e => e.name)")
    assert all(n.startswith(service.base) for n in loaded if n.startswith("http")), loaded
    shot(page, "01-empty")


def test_paste_a_url_shows_progress_then_a_link_to_a_valid_pdf(page: Page, source, tmp_path):
    photo = images.jpeg(640, 480)
    url = source.add_delayed("/web/photo.jpg", photo, delay_s=1.5)
    page.get_by_label("Image web addresses").fill(url)
    shot(page, "02-url-pasted")
    page.get_by_role("button", name="Convert").click()
    expect(page.locator("#progress")).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("Converting 1 image…")
    expect(page.get_by_role("button", name="Convert")).to_be_disabled()
    shot(page, "03-url-converting")
    link = page.get_by_role("link", name="Download PDF (1 page)")
    expect(link).to_be_visible()
    expect(page.locator("#progress")).to_be_hidden()
    expect(page.get_by_role("status")).to_have_text("Done: your PDF has 1 page.")
    expect(page.get_by_role("img", name="Page 1: " + url)).to_be_visible()
    shot(page, "04-url-done")
    pdf = download_pdf(page, tmp_path)
    assert len(open_pdf(pdf).pages) == 1
    assert photo in pdf  # the JPEG is embedded as sent


def test_upload_two_files_gives_a_two_page_pdf_in_order(page: Page, tmp_path):
    page.get_by_label("Image files").set_input_files(
        [
            {"name": "wide.png", "mimeType": "image/png", "buffer": images.png(300, 100)},
            {"name": "tall.jpg", "mimeType": "image/jpeg", "buffer": images.jpeg(100, 300)},
        ]
    )
    expect(page.locator("#chosen-list li")).to_have_count(2)
    page.get_by_label("Page size").select_option("image")
    shot(page, "05-files-chosen")
    page.get_by_role("button", name="Convert").click()
    expect(page.get_by_role("link", name="Download PDF (2 pages)")).to_be_visible()
    expect(page.locator("#previews img")).to_have_count(2)
    shot(page, "06-files-done")
    pdf = open_pdf(download_pdf(page, tmp_path))
    assert page_sizes(pdf) == [(225, 75), (75, 225)]  # 96 dpi: px * 0.75 pt


def test_dropped_files_are_used(page: Page):
    page.evaluate(
        """async () => {
            const c = document.createElement('canvas'); c.width = 40; c.height = 20;
            const blob = await new Promise(r => c.toBlob(r, 'image/png'));
            const dt = new DataTransfer();
            dt.items.add(new File([blob], 'dropped.png', {type: 'image/png'}));
            const zone = document.getElementById('drop');
            zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true}));
            zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
        }"""
    )
    expect(page.locator("#chosen-list li")).to_have_text(["dropped.png (1 KB)"])
    page.get_by_role("button", name="Convert").click()
    expect(page.get_by_role("link", name="Download PDF (1 page)")).to_be_visible()


def test_a_non_image_shows_the_services_error_in_plain_words(page: Page):
    page.get_by_label("Image files").set_input_files(
        [
            {"name": "photo.png", "mimeType": "image/png", "buffer": images.png()},
            {"name": "notes.txt", "mimeType": "text/plain", "buffer": images.non_image()},
        ]
    )
    page.get_by_role("button", name="Convert").click()
    alert = page.get_by_role("alert")
    expect(alert).to_have_text('Image 2 ("notes.txt"): The source is not a supported image.')
    expect(page.locator("#result")).to_be_hidden()
    expect(page.get_by_role("button", name="Convert")).to_be_enabled()
    shot(page, "07-error-non-image")


def test_a_bad_url_shows_the_error(page: Page, source):
    url = source.add_bytes("/web/notes.txt", images.non_image(), "text/plain")
    page.get_by_label("Image web addresses").fill(url)
    page.get_by_role("button", name="Convert").click()
    expect(page.get_by_role("alert")).to_have_text("The source is not a supported image.")


def test_nothing_to_convert_and_both_inputs_are_explained(page: Page, source):
    page.get_by_role("button", name="Convert").click()
    expect(page.get_by_role("alert")).to_contain_text("Paste an image address or choose")
    page.get_by_label("Image web addresses").fill(source.url("/a.png"))
    page.get_by_label("Image files").set_input_files(
        [{"name": "a.png", "mimeType": "image/png", "buffer": images.png()}]
    )
    page.get_by_role("button", name="Convert").click()
    expect(page.get_by_role("alert")).to_contain_text("either addresses or files")


def test_fits_a_phone_screen(browser, service, source):
    context = browser.new_context(
        viewport={"width": 360, "height": 740},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        base_url=service.base,
    )
    try:
        page = context.new_page()
        page.goto("/")
        shot(page, "08-phone-empty")
        url = source.add_bytes("/web/phone.jpg", images.jpeg(300, 400), "image/jpeg")
        page.get_by_label("Image web addresses").fill(url)
        page.get_by_role("button", name="Convert").tap()
        expect(page.get_by_role("link", name="Download PDF (1 page)")).to_be_visible()
        shot(page, "09-phone-done")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"page is {overflow}px wider than the screen"
        box = page.get_by_role("button", name="Convert").bounding_box()
        assert box and box["height"] >= 44  # a thumb-sized target
    finally:
        context.close()
