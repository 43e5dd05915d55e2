"""End to end: the data stages under a real `dvc repro` in a temporary git repo (offline)."""
from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from dvc_project import dvc, make_project, stages_run, update_params

pytestmark = pytest.mark.slow

TINY_DATA = {
    "data.source": "synthetic",
    "data.synthetic.train_ids": 4,
    "data.synthetic.test_ids": 2,
    "data.synthetic.images_per_id": 3,
    "pose.backend": "annotations",
}


def test_data_stages_repro_cache_and_rerun(tmp_path):
    proj = make_project(tmp_path / "proj", TINY_DATA)

    first = dvc("repro", "pairs", cwd=proj)
    assert stages_run(first.stdout) == ["download", "pose", "heatmaps", "pairs"]
    pairs = pd.read_parquet(proj / "data" / "pairs.parquet")
    assert set(pairs["split"]) == {"train", "test"}
    assert (pairs["from"] != pairs["to"]).all()
    counts = json.loads((proj / "data" / "pairs_counts.json").read_text())
    assert counts["train"]["pairs"] == len(pairs[pairs["split"] == "train"])
    # A record of the data, not an experiment metric: `dvc metrics show` stays narrow.
    assert "pairs_counts" not in dvc("metrics", "show", "--json", cwd=proj).stdout

    start = time.perf_counter()
    second = dvc("repro", "pairs", cwd=proj)
    elapsed = time.perf_counter() - start
    assert stages_run(second.stdout) == []
    print(f"no-op dvc repro: {elapsed:.2f} s")

    update_params(proj / "params.yaml", {"heatmaps.sigma": 4.0})
    third = dvc("repro", "pairs", cwd=proj)
    assert stages_run(third.stdout) == ["heatmaps", "pairs"]
    status = dvc("status", "pairs", cwd=proj)
    assert "up to date" in status.stdout
