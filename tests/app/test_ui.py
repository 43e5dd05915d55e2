"""The demo's page in a real headless browser (Debian's chromium via selenium): open it, upload
a photo, pick a gallery pose, re-pose, wait for the generated image and the status line; move
a joint in the pose editor by clicking its skeleton. Set DOCS_SCREENSHOTS=<dir> to keep the
first page as <dir>/demo.png (the README's picture)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.browser import NEEDS_BROWSER, PAGE_LIMIT_S, browser

from app.handlers import Demo
from pipeline.core.keypoints import J

pytestmark = NEEDS_BROWSER


def _browser():
    return browser("1300,1250")


def _wait(what: str, check, driver):
    deadline = time.monotonic() + PAGE_LIMIT_S
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    pytest.fail(f"the page never showed {what}; it showed:\n{driver.find_element('tag name', 'body').text[:2000]}")


def test_upload_pick_a_pose_and_see_the_result(demo, tmp_path):
    css = lambda d, sel: d.find_elements("css selector", sel)  # noqa: E731
    driver = _browser()
    try:
        driver.get(demo.url)
        upload = _wait("the source upload", lambda: css(driver, "#source input[type=file]"), driver)[0]
        upload.send_keys(str(demo.photos[6]))  # a file input takes a path even when hidden
        _wait("the uploaded photo", lambda: css(driver, "#source img"), driver)
        thumbs = _wait("the pose gallery", lambda: css(driver, "#pose-gallery button.thumbnail-item"), driver)
        thumbs[3].click()
        _wait("pose 3 chosen", lambda: css(driver, "#pose-index input")[0].get_attribute("value") == "3", driver)
        driver.find_element("css selector", "#go-gallery").click()
        status = _wait("the status line", lambda: [s for s in css(driver, "#status")
                                                  if "Done in" in s.text or "Error" in s.text], driver)[0].text
        assert status.startswith("Done in"), status
        result = _wait("the generated image", lambda: css(driver, "#result img"), driver)[0]
        assert result.get_attribute("src") and result.size["height"] > 0
        # The browser shows the picture: it loaded (naturalWidth is the PNG's 64 px).
        assert driver.execute_script("return arguments[0].naturalWidth", result) == 64
        shot = tmp_path / "demo.png"
        page_h, chrome_h = driver.execute_script(
            "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]")
        driver.set_window_size(1300, min(page_h + chrome_h, 3000))  # the whole page in one picture
        time.sleep(0.5)
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    assert shot.stat().st_size > 10_000
    if os.environ.get("DOCS_SCREENSHOTS"):  # 256 colours: a third of the bytes in the repository
        Image.open(shot).convert("RGB").quantize(256, dither=Image.Dither.NONE) \
            .save(Path(os.environ["DOCS_SCREENSHOTS"]) / "demo.png", optimize=True)


def test_edit_a_joint_by_clicking_the_skeleton(demo):
    from selenium.webdriver.common.action_chains import ActionChains

    css = lambda d, sel: d.find_elements("css selector", sel)  # noqa: E731
    driver = _browser()
    try:
        driver.get(demo.url)
        tab = _wait("the editor tab", lambda: [t for t in css(driver, "button[role=tab]")
                                               if t.text == "Edit a pose"], driver)[0]
        tab.click()
        canvas = _wait("the skeleton picture", lambda: css(driver, "#pose-canvas img"), driver)[0]
        text = css(driver, "#pose-json textarea")[0]
        before = json.loads(text.get_attribute("value"))
        natural_w = driver.execute_script("return arguments[0].naturalWidth", canvas)
        shown_w, shown_h = canvas.size["width"], canvas.size["height"]
        # Click 20 px right of and 30 px below the picture's top-left corner, as shown.
        ActionChains(driver).move_to_element_with_offset(canvas, -shown_w // 2 + 20, -shown_h // 2 + 30) \
            .click().perform()
        moved = _wait("the moved joint", lambda: (lambda p: p if p != before else None)(
            json.loads(text.get_attribute("value"))), driver)
    finally:
        driver.quit()
    scale = natural_w / before["width"]  # the picture's pixels per pose pixel
    assert scale == Demo.canvas_scale(before["height"])
    wrist = moved["keypoints"][J["r_wrist"]]  # the joint chosen by default
    zoom = natural_w / shown_w  # picture pixels per screen pixel
    expected = [(20 * zoom + 0.5) / scale - 0.5, (30 * zoom + 0.5) / scale - 0.5]
    assert np.allclose(wrist, expected, atol=1.5 / scale), (wrist, expected)
    others = [k for j, k in enumerate(moved["keypoints"]) if j != J["r_wrist"]]
    assert others == [k for j, k in enumerate(before["keypoints"]) if j != J["r_wrist"]]  # only that one
