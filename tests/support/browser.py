"""A real headless Chromium for the UI tests (Debian's chromium + chromium-driver, driven by
selenium); the tests skip, saying why, where either is absent."""
from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PAGE_LIMIT_S = 180  # a bound against a hang (a busy machine renders slowly), not a speed check
# pytestmark of a browser test module: slow, and skipped without the browser.
NEEDS_BROWSER = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM.exists() and DRIVER.exists()),
                       reason="needs Debian's chromium and chromium-driver (.ci/run installs them)"),
]


def browser(window: str = "1400,800"):
    """A headless Chrome webdriver of the given window size ("width,height")."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (requirements.txt)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={window}"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(DRIVER)), options=opts)
