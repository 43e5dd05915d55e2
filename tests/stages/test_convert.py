"""stages.convert: an authors'-layout Keras generator becomes a checkpoint that evaluate and
repose take like a trained one; a wrong file is one line and exit status 2."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import shared_path
from pipeline.core.config import EvaluateConfig, PathsConfig
from pipeline.eval.evaluation import evaluate_model
from pipeline.model.checkpoint import load_generator
from pipeline.model.generator import Generator
from pipeline.model.keras_h5 import sha256_file
from stages.convert import main
from support.eval_data import TINY, H, W, build_eval_data
from support.keras_h5 import randomise, write_generator_h5


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    G = randomise(Generator(TINY, H, W), seed=5).eval()
    h5 = write_generator_h5(root / "generator-warp-mask-nn3-cl12.h5", G)
    assert main([str(h5), "--out", str(root / "authors.pt"), "--height", str(H),
                 "--width", str(W)]) == 0
    return root, G, h5, root / "authors.pt"


def test_checkpoint_holds_the_same_generator_and_its_source(converted):
    _, G, h5, pt = converted
    G2, meta = load_generator(pt)
    assert meta["source_sha256"] == sha256_file(h5) and meta["source"] == h5.name
    assert meta["amp"] is False and meta["sigma"] == 6.0
    assert meta["model"] == TINY and (meta["image"].height, meta["image"].width) == (H, W)
    gen = torch.Generator().manual_seed(0)
    kp = torch.rand(2, 18, 2, generator=gen) * torch.tensor([W - 1, H - 1])
    x = (torch.rand(2, 3, H, W, generator=gen) * 2 - 1, torch.rand(2, 18, H, W, generator=gen),
         torch.rand(2, 18, H, W, generator=gen), kp, kp.flip(0))
    with torch.no_grad():
        assert torch.allclose(G2(*x).image, G(*x).image, atol=1e-6, rtol=0)


def test_evaluate_and_repose_take_the_converted_checkpoint(converted, tmp_path):
    root, _, _, pt = converted
    dataset, files, _ = build_eval_data(root / "data")
    paths = PathsConfig(pairs=str(files["pairs"]), manifest=str(files["manifest"]),
                        keypoints=str(files["keypoints"]), heatmaps=str(root / "data" / "heatmaps"),
                        dataset=str(dataset))
    summary, per_pair = evaluate_model(pt, paths, tmp_path / "eval",
                                       EvaluateConfig(batch_size=4, grid_pairs=2), "cpu")
    assert summary["pairs"] == len(per_pair) > 0 and 0 < summary["model"]["ssim"] <= 1
    assert summary["notes"]["precision"] == "float32"  # the original trained in float32

    from pipeline.infer.repose import repose

    photos = sorted(shared_path("data/market1501-sample").glob("*.jpg"))
    target = tmp_path / "pose.json"  # a standing pose at the model's resolution
    kp = [[W / 2 + (j % 5 - 2) * 2, 4 + j * (H - 8) / 17] for j in range(18)]
    target.write_text(json.dumps({"keypoints": kp}))
    out = repose(photos[0], target, pt, tmp_path / "out.png",
                 pose_weights=str(shared_path("weights/yolo11n-pose.pt")), device="cpu")
    assert out == [tmp_path / "out.png"] and out[0].stat().st_size > 0


def test_wrong_files_are_one_line_and_status_2(tmp_path, capsys):
    (tmp_path / "d.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # a truncated HDF5 header
    assert main([str(tmp_path / "d.h5"), "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("convert: error: ") and "d.h5" in err and "\n" not in err
    assert not (tmp_path / "x.pt").exists()
    assert main([str(tmp_path / "d.h5"), "--out", str(tmp_path / "x.pt"), "--height", "64"]) == 2
    assert "--width" in capsys.readouterr().err
