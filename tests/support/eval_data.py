"""Shared test helpers (moved out of tests/eval/test_evaluation.py)."""
from __future__ import annotations


import numpy as np

from pipeline.data.annotations import join_manifest, read_annotations
from pipeline.core.config import ModelConfig, PairsConfig, SyntheticConfig
from pipeline.data.heatmap_store import write_heatmap_store
from pipeline.core.keypoints import keypoints_array, scale_keypoints
from pipeline.data.manifest import build_manifest
from pipeline.data.pairs import make_pairs
from pipeline.datasets.synthetic import generate

H, W = 64, 32  # model resolution; the synthetic crops are 128x64, so loading resizes
TINY = ModelConfig(encoder_widths=(4, 8, 8, 8, 8, 8), decoder_widths=(8, 8, 8, 8, 4))


def build_eval_data(root, train_ids: int = 1, test_ids: int = 2, per_id: int = 3):
    """Synthetic dataset + stage outputs (manifest, keypoints, heatmaps at H x W, train and
    test pairs) under root -> (dataset dir, {manifest, keypoints, pairs: file}, pairs table)."""
    dataset = root / "dataset"
    generate(dataset, SyntheticConfig(train_ids=train_ids, test_ids=test_ids, images_per_id=per_id),
             128, 64, seed=0, junk=0, distractors=0)
    manifest = build_manifest(dataset)
    ann = read_annotations(sorted((dataset / "annotations").glob("*.csv")))
    table = join_manifest(ann, manifest)
    names = table["name"].astype(str).tolist()
    wh = table[["width", "height"]].to_numpy(np.float32)
    write_heatmap_store(root / "heatmaps", names, scale_keypoints(keypoints_array(table), wh, (H, W)),
                        H, W, sigma=3.0)
    pairs = make_pairs(table, PairsConfig(test_pairs_per_id=3), seed=0)
    files = {k: root / f"{k}.parquet" for k in ("manifest", "keypoints", "pairs")}
    manifest.to_parquet(files["manifest"], index=False)
    table.to_parquet(files["keypoints"], index=False)
    pairs.to_parquet(files["pairs"], index=False)
    return dataset, files, pairs

