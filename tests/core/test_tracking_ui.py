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
from support.browser import NEEDS_BROWSER, PAGE_LIMIT_S, browser
from support.mlflow_server import mlflow_server

from pipeline.core.config import TrackingConfig
from pipeline.core.tracking import UI_VIEW, run_ui_url, start_run

pytestmark = NEEDS_BROWSER


def _browser():
    return browser("1400,800")


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
