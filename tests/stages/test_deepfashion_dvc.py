"""End to end: `dvc repro` with dataset=deepfashion mode=paper on a tiny DeepFashion-shaped
archive (the papers' flat 256x176 layout or the In-shop 256x256 canvases, real names, drawn
people): lists, canonical-format annotations and the fixed test pairs from files, 176-wide
images padded onto the white canvas, the paper's 7-level generator at tiny widths for two
steps, evaluation on the papers' 176-wide frame whichever layout the archive has."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import SHARED
from dvc_project import TWO_STEP_RUN, dvc, make_project, stages_run
from support.deepfashion_files import make_deepfashion, same_item_pairs

pytestmark = pytest.mark.slow
VGG = SHARED / "weights" / "vgg19_features_caffe_rgb_fp16.pt"


def loss_settings() -> dict:
    """The paper's NN loss (5x5 window) with the offline VGG19 when ../shared has it, else L1."""
    if VGG.is_file():
        return {"loss.vgg_weights": str(VGG)}
    return {"loss.nn_weight": 0.0, "loss.l1_weight": 1.0}


@pytest.mark.parametrize("layout, width", [("flat176", 176), ("inshop", 256)])
def test_deepfashion_paper_config_end_to_end(tmp_path, layout, width):
    from pipeline.datasets.deepfashion import ANNOTATION_FILES, TEST_PAIRS_FILE

    archive, ann = make_deepfashion(tmp_path, layout)
    settings = {
        "data.archive": str(archive),
        "data.split_lists": [str(ann / "train.lst"), str(ann / "test.lst")],
        "pose.annotations": [str(ann / ANNOTATION_FILES[s]) for s in ("train", "test")],
        "pairs.test_list": str(ann / TEST_PAIRS_FILE),
        "image.height": 64,
        "image.width": 64,
        "heatmaps.sigma": 2.0,
        "model.encoder_widths": [8, 8, 8, 16, 16, 16, 16],
        "model.decoder_widths": [16, 16, 16, 16, 8, 8],
        "model.disc_widths": [8, 16, 16],
        **loss_settings(),
        **TWO_STEP_RUN,
    }
    proj = make_project(tmp_path / "proj", settings, {"dataset": "deepfashion", "mode": "paper"})
    out = dvc("repro", cwd=proj)
    assert stages_run(out.stdout) == ["download", "pose", "heatmaps", "pairs", "train", "evaluate"]

    man = pd.read_parquet(proj / "data" / "manifest.parquet")
    assert set(man["width"]) == {width} and man["item_id"].nunique() == 7
    pairs = pd.read_parquet(proj / "data" / "pairs.parquet")
    test = pairs[pairs["split"] == "test"]
    assert set(zip(test["from"], test["to"])) == set(same_item_pairs())
    train = pairs[pairs["split"] == "train"]
    item = dict(zip(man["name"], man["item_id"]))
    assert len(train) > 0 and (train["from"].map(item) == train["to"].map(item)).all()
    ckpt_params = json.loads((proj / "metrics" / "train.json").read_text())
    assert ckpt_params["steps"] == 2
    metrics = json.loads((proj / "metrics" / "eval.json").read_text())
    assert metrics["pairs"] == len(same_item_pairs()) and 0 <= metrics["ssim"] <= 1
    details = json.loads((proj / "metrics" / "eval_details.json").read_text())
    # Every family's DeepFashion protocol is reported (conf/dataset/deepfashion.yaml), each a
    # group of its own; offline without the torchvision Inception their FID is null, with why.
    for name in ("patn-fashion", "gfla-fashion", "dptn-fashion", "pidm-fashion", "cfld-fashion"):
        assert name in details["protocols"], name
    # 176 of 256 columns at 64x64: the padding, or the canvas outside the papers' frame (10
    # columns a side), is not scored.
    assert details["notes"]["scored_frame"] == "rows 0..63, columns 10..53 of 64x64"
