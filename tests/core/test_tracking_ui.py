"""The MLflow UI, in a real headless browser (Debian's chromium), opens ui_url() on the
model-training view: the experiment's runs table with our run in it, not the GenAI
traces overview. Set DOCS_SCREENSHOTS=<dir> to keep the page as <dir>/mlflow.png (the
README's picture)."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from pipeline.core.config import TrackingConfig
from pipeline.core.tracking import UI_VIEW, run_ui_url, start_run
from support.mlflow_server import mlflow_server

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PAGE_LIMIT_S = 180  # a bound against a hang (a busy machine renders slowly), not a speed check
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM.exists() and DRIVER.exists()),
                       reason="needs Debian's chromium and chromium-driver (.ci/run installs them)"),
]


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (requirements.txt)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,800"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(DRIVER)), options=opts)


def _wait_for_text(driver, texts: tuple[str, ...]) -> str:
    deadline = time.monotonic() + PAGE_LIMIT_S
    body = ""
    while time.monotonic() < deadline:
        body = driver.find_element("tag name", "body").text
        if all(t in body for t in texts):
            return body
        time.sleep(0.5)
    pytest.fail(f"the page never showed {texts}; it showed:\n{body[:2000]}")


def test_ui_url_opens_the_runs_table(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    with mlflow_server(tmp_path) as url:
        with start_run(TrackingConfig(uri=url, experiment="deformable-gan"), name="quickstart-run") as run:
            run.log_metrics({"val/mask_ssim": 0.8}, step=100)
        page = run_ui_url(run.run_id, url, base=url)
        assert page.startswith(f"{url}/#/experiments/") and page.endswith(f"?{UI_VIEW}")
        driver = _browser()
        try:
            driver.get(page)
            body = _wait_for_text(driver, ("quickstart-run", "Run Name"))
            shot = tmp_path / "mlflow.png"
            driver.save_screenshot(str(shot))
        finally:
            driver.quit()
    assert "Run Name" in body, body[:2000]  # the runs table, not the traces overview
    assert shot.stat().st_size > 10_000
    if os.environ.get("DOCS_SCREENSHOTS"):
        shutil.copy(shot, Path(os.environ["DOCS_SCREENSHOTS"]) / "mlflow.png")
