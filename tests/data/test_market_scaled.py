"""Scaled rehearsal: the Market config's stages end to end under `dvc repro` on ~2,000
images of a Market-shaped archive (the generator of bench/bench_rehearsal.py at 6% of the
ids), with tiny widths, a few train steps and a few hundred evaluated pairs."""
from __future__ import annotations

import importlib.util
import json

import pandas as pd
import pytest
from conftest import ROOT, shared_path
from dvc_project import dvc

pytestmark = pytest.mark.slow


def _bench():
    spec = importlib.util.spec_from_file_location("bench_rehearsal", ROOT / "bench" / "bench_rehearsal.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_market_config_end_to_end_on_scaled_archive(tmp_path):
    from pipeline.datasets.synthetic.market_archive import build

    ann = shared_path("data/market1501-annotations")
    weights = shared_path("weights")
    archive, subset = tmp_path / "Market-1501-v15.09.15.zip", tmp_path / "annotations"
    info = build(ann, archive, fraction=0.06, double_jpg="strip", workers=2, subset_dir=subset)
    assert 1800 <= info["images"] <= 2400
    n_query = info["per_split"]["query"]

    bench = _bench()
    proj = bench.make_market_project(tmp_path / "proj", {
        **bench.input_settings(archive, subset, weights),
        "model.encoder_widths": [8, 8, 16, 16, 16, 16],
        "model.decoder_widths": [16, 16, 16, 8, 8],
        "model.disc_widths": [8, 8, 16, 16],
        "train.steps": 2,
        "train.batch_size": 2,
        "train.num_workers": 0,
        "train.checkpoint_every": 2,
        "train.log_every": 1,
        "train.sample_every": 2,
        "train.val_every": 0,
        "evaluate.max_pairs": 200,
        "evaluate.batch_size": 25,
    })
    dvc("repro", cwd=proj)

    dataset = json.loads((proj / "data" / "dataset_summary.json").read_text())
    assert dataset["counts"]["images"] == info["images"]
    pose = json.loads((proj / "data" / "pose_summary.json").read_text())
    # Query images have no canonical annotation: reported as such, never as failures.
    assert pose["no_annotation"] == n_query and pose["failed"] == 0
    pairs = pd.read_parquet(proj / "data" / "pairs.parquet")
    listed = pd.read_csv(subset / "market-pairs-test.csv")
    assert (pairs["split"] == "test").sum() == len(listed) >= 200
    assert not pairs["from"].str.endswith(".jpg.jpg").any()  # files carry one .jpg here
    store = json.loads((proj / "data" / "heatmaps" / "meta.json").read_text())
    assert store["format"] == "keypoints" and store["count"] == info["images"]
    ev = json.loads((proj / "metrics" / "eval.json").read_text())
    assert ev["pairs"] == 200
    assert (proj / "data" / "evaluation" / "grid.png").is_file()
