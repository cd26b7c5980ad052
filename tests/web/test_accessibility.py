"""Accessibility: every control has a name, the page works from the keyboard alone,
and status changes are announced."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.support import images
from tests.web.conftest import shot

# A control's accessible name from the usual sources (labels, aria-labelledby,
# aria-label, its own text, alt): the checks a screen reader's name computation
# starts with. Returns the controls that have none.
UNNAMED = """() => {
  const text = (el) => (el ? el.textContent.replace(/\\s+/g, ' ').trim() : '');
  const name = (el) => {
    if (el.getAttribute('aria-labelledby')) {
      return el.getAttribute('aria-labelledby').split(/\\s+/)
        .map((id) => text(document.getElementById(id))).join(' ').trim();
    }
    if (el.getAttribute('aria-label')) return el.getAttribute('aria-label').trim();
    if (el.labels && el.labels.length) return Array.from(el.labels).map(text).join(' ').trim();
    if (el.tagName === 'IMG') return (el.alt || '').trim();
    return text(el);
  };
  return Array.from(document.querySelectorAll(
      'input, select, textarea, button, a[href], img, progress, [role=button]'))
    .filter((el) => !name(el))
    .map((el) => el.outerHTML.slice(0, 120));
}"""


def test_every_control_is_labelled(page: Page, source):
    assert page.evaluate(UNNAMED) == []
    assert page.evaluate("document.documentElement.lang") == "en"
    assert page.locator("h1").count() == 1
    # Each control is found by the name a screen reader announces.
    expect(page.get_by_role("textbox", name="Image web addresses")).to_be_visible()
    expect(page.get_by_label("Image files")).to_be_attached()
    expect(page.get_by_role("combobox", name="Page size")).to_be_visible()
    expect(page.get_by_role("button", name="Convert")).to_be_visible()
    # Status is announced politely; errors as alerts.
    assert page.get_by_role("status").get_attribute("aria-live") == "polite"
    assert page.locator("#error").get_attribute("role") == "alert"
    # After a conversion the new controls (previews, link) are named too.
    url = source.add_bytes("/a11y/photo.png", images.png(), "image/png")
    page.get_by_label("Image web addresses").fill(url)
    page.get_by_role("button", name="Convert").click()
    expect(page.get_by_role("link", name="Download PDF (1 page)")).to_be_visible()
    assert page.evaluate(UNNAMED) == []


def focused_id(page: Page) -> str:
    return page.evaluate("document.activeElement && document.activeElement.id")


def tab_to(page: Page, element_id: str, limit: int = 10) -> None:
    for _ in range(limit):
        if focused_id(page) == element_id:
            return
        page.keyboard.press("Tab")
    assert focused_id(page) == element_id, f"Tab never reached #{element_id}"


@pytest.mark.parametrize("key", ["Enter", "Space"])
def test_keyboard_only_conversion(page: Page, source, key):
    url = source.add_bytes(f"/a11y/keyboard-{key}.jpg", images.jpeg(), "image/jpeg")
    page.keyboard.press("Tab")
    assert focused_id(page) == "urls", "the address box is the first stop"
    page.keyboard.type(url)
    tab_to(page, "page-size")
    page.keyboard.press("ArrowDown")  # native select: A4
    assert page.get_by_label("Page size").input_value() == "A4"
    tab_to(page, "convert")
    shot(page, f"10-keyboard-{key.lower()}-focus-on-convert")
    page.keyboard.press(key)
    expect(page.get_by_role("link", name="Download PDF (1 page)")).to_be_visible()
    # Focus moves to the result, and the next Tab reaches the download link.
    assert focused_id(page) == "result-title"
    tab_to(page, "download", limit=3)
    shot(page, f"11-keyboard-{key.lower()}-done")


def test_file_picker_is_reachable_by_keyboard(page: Page):
    tab_to(page, "files")
    outline = page.evaluate(
        "getComputedStyle(document.querySelector('#files + label .button-like')).outlineStyle"
    )
    assert outline == "solid", "keyboard focus on the file picker is visible"


def test_ctrl_enter_in_the_address_box_converts(page: Page, source):
    url = source.add_bytes("/a11y/ctrl-enter.png", images.png(), "image/png")
    page.get_by_label("Image web addresses").fill(url)
    page.get_by_label("Image web addresses").press("Control+Enter")
    expect(page.get_by_role("link", name="Download PDF (1 page)")).to_be_visible()
