"""pipeline.eval.evaluation on a tiny synthetic dataset with a tiny untrained generator."""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.data.preview import TITLE_H

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline.model.checkpoint import save_generator
from pipeline.core.config import EvaluateConfig, ImageConfig, PathsConfig, TrackingConfig
from pipeline.eval.evaluation import (evaluate_model, track_evaluation, headline_metrics, pair_file,
                                 eval_tags, null_reasons, write_summary)
from pipeline.metrics.ssim import ssim
from pipeline.datasets.market1501 import MARKET1501
from pipeline.eval.samples import first_per_identity

H, W = 64, 32  # model resolution; the synthetic crops are 128x64, so loading resizes
from support.eval_data import TINY, build_eval_data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    dataset, files, pairs = build_eval_data(root)
    from pipeline.model.generator import Generator

    torch.manual_seed(0)
    return root, dataset, files, pairs[pairs["split"] == "test"], Generator(TINY, H, W)


def _evaluate(tiny, out, run_id=None, uri=None, models=None, **cfg):
    root, dataset, files, _, G = tiny
    model = save_generator(out / "generator.pt", G, TINY, ImageConfig(height=H, width=W),
                           {"run_id": run_id, "step": 7})
    tracking = TrackingConfig(uri=uri, experiment="test-eval") if uri else None
    paths = PathsConfig(pairs=str(files["pairs"]), manifest=str(files["manifest"]),
                        keypoints=str(files["keypoints"]), heatmaps=str(root / "heatmaps"),
                        dataset=str(dataset))
    summary, per_pair = evaluate_model(model, paths, out / "eval",
                                       EvaluateConfig(batch_size=4, grid_pairs=3, **cfg), "cpu", models)
    if tracking is not None:
        track_evaluation(summary, tracking)
    return summary, per_pair


def test_generates_scores_and_logs_into_the_training_run(tiny, tmp_path):
    from mlflow.tracking import MlflowClient

    from pipeline.core.tracking import start_run

    test_pairs = tiny[3]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with start_run(TrackingConfig(uri=uri, experiment="test-eval")) as tracker:
        train_run = tracker.run_id
    summary, per_pair = _evaluate(tiny, tmp_path, run_id=train_run, uri=uri)

    # Every test pair generated as {from}___{to}.png at the model resolution.
    assert len(per_pair) == len(test_pairs) == summary["pairs"] > 0
    assert list(per_pair["from"]) == list(test_pairs["from"])
    images = tmp_path / "eval" / "images"
    for a, b, f in per_pair[["from", "to", "file"]].itertuples(index=False):
        assert f == pair_file(a, b) and Image.open(images / f).size == (W, H)
    # The per-pair table and the summary hold the model and the copy-source baseline.
    assert {"model_ssim", "copy_source_ssim"} <= set(per_pair.columns)
    assert set(summary) == {"model", "copy_source", "real", "pairs", "notes"}
    assert 0 < summary["copy_source"]["ssim"] < 1
    assert np.isfinite(per_pair["model_ssim"]).all()
    # The copy-source SSIM is the protocol SSIM of the resized real target vs its source.
    from pipeline.data.pair_dataset import read_image

    man = pd.read_parquet(tiny[2]["manifest"]).set_index("name")
    def load(n):
        x = read_image(tiny[1] / man.loc[n, "path"], H, W)
        return ((x.transpose(1, 2, 0) + 1) * 127.5).round().astype(np.uint8)[None]
    a, b = per_pair.loc[0, ["from", "to"]]
    assert per_pair.loc[0, "copy_source_ssim"] == pytest.approx(ssim(load(b), load(a))[0], abs=1e-6)
    # Untrained, the model has not learned the person: the copy baseline is more similar.
    assert summary["copy_source"]["ssim"] > summary["model"]["ssim"]

    # The grid: one row per test identity (2 here, though grid_pairs is 3), each the first
    # pair of its id; its first panel is that pair's source image.
    from pipeline.datasets.market1501 import parse_name

    grid = np.asarray(Image.open(tmp_path / "eval" / "grid.png").convert("RGB"))
    ids = test_pairs["from"].map(lambda n: parse_name(n)[0])
    firsts = test_pairs[~ids.duplicated().to_numpy()]
    assert len(firsts) == 2 and grid.shape == (TITLE_H + 2 * H, 4 * W, 3)
    assert (grid[:TITLE_H] < 128).any()  # the column titles
    for row, a in enumerate(firsts["from"]):
        top = TITLE_H + row * H
        np.testing.assert_array_equal(grid[top:top + H, :W], load(a)[0])
    assert (tmp_path / "eval" / "per_pair.parquet").is_file()

    # Metrics and grid went into the training run, not a new one.
    assert summary["notes"]["mlflow_run_id"] == train_run
    client = MlflowClient(uri)
    run = client.get_run(train_run)
    assert run.data.metrics["eval/copy_source/ssim"] == pytest.approx(summary["copy_source"]["ssim"])
    assert run.data.metrics["eval/pairs"] == len(per_pair)
    assert sorted(f.path for f in client.list_artifacts(train_run, "evaluation")) == [
        "evaluation/details.json", "evaluation/grid.png"]
    # A few tags (which checkpoint, which metrics are null); the reasons in one artifact.
    tags = run.data.tags
    assert tags["eval/checkpoint"] == "last" and summary["notes"]["checkpoint"] == "last"
    assert "model/fid" in tags["eval/null_metrics"] and not any("reason" in k for k in tags)
    details = json.loads(Path(client.download_artifacts(train_run, "evaluation/details.json",
                                                        str(tmp_path))).read_text())
    assert details["model"]["fid_reason"] == summary["model"]["fid_reason"]

    path = write_summary(tmp_path / "eval.json", summary)
    assert json.loads(path.read_text())["pairs"] == len(per_pair)
    assert [p.name for p in tmp_path.glob(".eval.json*")] == []  # no temporary file left


class CountingFeatures(torch.nn.Module):
    """A tiny stand-in feature network (features, logits) that counts the images it sees."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4, 3)
        self.images = 0

    def forward(self, x):
        self.images += len(x)
        f = self.conv(x / 255.0).mean(dim=(2, 3))
        return f, self.fc(f)


def test_set_metrics_run_inception_once_per_image_set(tiny, tmp_path):
    from pipeline.metrics.scoring import Models

    net = CountingFeatures().eval()
    models = Models(inception=net, inception_info="tiny", device="cpu")
    summary, per_pair = _evaluate(tiny, tmp_path, models=models, max_pairs=5)
    # model: targets, generated, masked generated; copy_source: sources, masked sources
    # (FID reference shared); real: masked targets (the targets' outputs are the model's).
    assert net.images == 6 * len(per_pair) == 30
    for group in ("model", "copy_source"):
        assert summary[group]["fid"] > 0 and summary[group]["is"] >= 1 and summary[group]["mask_is"] >= 1
    assert summary["real"]["is"] >= 1 and summary["real"]["mask_is"] >= 1 and "fid" not in summary["real"]
    assert summary["model"]["lpips"] is None and summary["model"]["lpips_reason"] == "not requested"


def test_without_baselines_only_the_model_is_scored_and_its_numbers_stay(tiny, tmp_path):
    from pipeline.metrics.scoring import Models

    net = CountingFeatures().eval()
    models = Models(inception=net, inception_info="tiny", device="cpu")
    full, _ = _evaluate(tiny, tmp_path / "a", models=models, max_pairs=5)
    net.images = 0
    lean, per_pair = _evaluate(tiny, tmp_path / "b", models=models, max_pairs=5, baselines=False)
    assert net.images == 3 * 5  # targets, generated, masked generated
    assert "copy_source" not in lean and "real" not in lean
    assert lean["notes"]["baselines"] == "not scored (evaluate.baselines: false)"
    assert not [c for c in per_pair.columns if c.startswith("copy_source_")]
    for key, value in full["model"].items():
        assert lean["model"][key] == (pytest.approx(value, rel=1e-9) if isinstance(value, float) else value), key
    assert headline_metrics(lean) == headline_metrics(full)


def test_max_pairs_and_new_evaluate_run_without_run_id(tiny, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary, per_pair = _evaluate(tiny, tmp_path, uri=uri, max_pairs=2)
    assert len(per_pair) == 2 and len(list((tmp_path / "eval" / "images").glob("*.png"))) == 2
    run = MlflowClient(uri).get_run(summary["notes"]["mlflow_run_id"])
    assert run.info.run_name == "evaluate"
    assert "eval/model/ssim" in run.data.metrics


def test_identity_rows_take_the_first_pair_of_each_person():
    names = ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c1s1_000101_01.jpg",
             "0002_c3s1_000101_01.jpg", "0005_c1s1_000101_01.jpg", "0007_c2s1_000101_01.jpg",
             "0009_c1s1_000101_01.jpg"]
    ids = MARKET1501.identify(names)["person_id"].to_numpy()  # the dataset decides identity
    assert first_per_identity(ids, 8).tolist() == [0, 2, 4, 6]
    assert first_per_identity(ids, 2).tolist() == [0, 2]
    assert first_per_identity(ids, 0).tolist() == []
    assert first_per_identity(["a.png", "b.png", "a.png"], 8).tolist() == [0, 1]


def test_metrics_file_holds_numbers_and_tags_hold_the_text():
    summary = {
        "model": {"ssim": 0.5, "mask_ssim": 0.75, "fid": None, "fid_reason": "no weights", "is_std": 0.1,
                  "n_pairs": 4, "inception": "tiny", "pckh": 0.25},
        "copy_source": {"ssim": 0.4, "fid": None, "fid_reason": "no weights"},
        "real": {"pckh": 0.9},
        "pairs": 4,
        "notes": {"checkpoint": "best", "generator": "models/best.pt", "generator_step": 300},
    }
    # Flat, numbers only, in HEADLINE order; null metrics, std, counts and baselines are details.
    metrics = headline_metrics(summary)
    assert metrics == {"ssim": 0.5, "mask_ssim": 0.75, "pckh": 0.25, "pairs": 4}
    assert list(metrics) == ["ssim", "mask_ssim", "pckh", "pairs"]
    # One reason, once, for the two metrics it nulls; three tags, none of them a reason.
    assert null_reasons(summary) == {"no weights": ["model/fid", "copy_source/fid"]}
    assert eval_tags(summary) == {
        "eval/checkpoint": "best", "eval/generator": "models/best.pt",
        "eval/null_metrics": "model/fid, copy_source/fid (reasons: evaluation/details.json)",
    }


def _stage_params(tiny, tmp_path, tracking: str = ""):
    """A best.pt of the tiny generator and a params.yaml for stages.evaluate over the tiny data."""
    root, dataset, files, test_pairs, G = tiny
    models = tmp_path / "models"
    save_generator(models / "best.pt", G, TINY, ImageConfig(height=H, width=W), {"step": 3})
    params = tmp_path / "params.yaml"
    params.write_text(
        "paths:\n"
        f"  dataset: {dataset}\n  manifest: {files['manifest']}\n  keypoints: {files['keypoints']}\n"
        f"  heatmaps: {root / 'heatmaps'}\n  pairs: {files['pairs']}\n  models: {models}\n"
        f"  evaluation: {tmp_path / 'eval'}\n  eval_metrics: {tmp_path / 'm' / 'eval.json'}\n"
        f"  eval_details: {tmp_path / 'm' / 'eval_details.json'}\n"
        "train:\n  device: cpu\n" + tracking +
        "evaluate:\n  checkpoint: best\n  batch_size: 4\n  grid_pairs: 2\n  download: false\n"
        "  inception_weights: null\n  lpips_weights: null\n  pose_weights: /nonexistent/pose.pt\n"
    )
    return models, params


def test_stage_writes_results_before_tracking_and_keeps_them_when_it_fails(tiny, tmp_path, capsys,
                                                                          monkeypatch):
    """Disk full while logging to MLflow (ENOSPC injected into the client's writes): the
    metrics and details are on disk, the stage succeeds, one warning line says why."""
    import errno

    from mlflow.tracking import MlflowClient

    from stages.evaluate import main

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(MlflowClient, "log_batch", no_space)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _, params = _stage_params(tiny, tmp_path, f"tracking:\n  uri: {uri}\n")
    assert main(["--params", str(params)]) == 0
    assert json.loads((tmp_path / "m" / "eval.json").read_text())["pairs"] == len(tiny[3])
    details = json.loads((tmp_path / "m" / "eval_details.json").read_text())
    assert "mlflow_run_id" not in details["notes"]
    err = capsys.readouterr().err
    assert err.count("No space left on device") == 1 and "Traceback" not in err


def test_stage_scores_the_checkpoint_params_name(tiny, tmp_path, capsys):
    """stages.evaluate model mode: evaluate.checkpoint best -> models/best.pt; the metrics file
    holds only numbers, the details file says which checkpoint and why metrics are null."""
    from stages.evaluate import main

    test_pairs = tiny[3]
    models, params = _stage_params(tiny, tmp_path)
    assert main(["--params", str(params), "--no-tracking"]) == 0
    metrics = json.loads((tmp_path / "m" / "eval.json").read_text())
    assert set(metrics) == {"ssim", "mask_ssim", "l1", "masked_l1", "pairs"}
    assert all(isinstance(v, (int, float)) for v in metrics.values())
    assert metrics["pairs"] == len(test_pairs)
    details = json.loads((tmp_path / "m" / "eval_details.json").read_text())
    assert details["notes"] == {"checkpoint": "best", "generator": str(models / "best.pt"), "generator_step": 3,
                                "training_run_id": None, "grid": str(tmp_path / "eval" / "grid.png"),
                                "precision": "float32", "uint8": "round", "trained_amp": None}
    assert details["model"]["ssim"] == metrics["ssim"] and details["model"]["fid"] is None
    assert details["model"]["fid_reason"] and details["copy_source"]["ssim"] > 0
    # Each reason printed once, however many metrics it nulls.
    printed = capsys.readouterr().out
    assert printed.count(details["model"]["fid_reason"]) == 1 and printed.count("null [1]") >= 2

    # last: models/generator.pt is not there -> one line naming the param and the file.
    params.write_text(params.read_text().replace("checkpoint: best", "checkpoint: last"))
    assert main(["--params", str(params), "--no-tracking"]) == 2
    assert capsys.readouterr().err == (f"evaluate: error: evaluate.checkpoint: last: {models / 'generator.pt'} "
                                       "not found (run the train stage first)\n")
    # --model overrides evaluate.checkpoint.
    assert main(["--params", str(params), "--no-tracking", "--model", str(models / "best.pt")]) == 0
    details = json.loads((tmp_path / "m" / "eval_details.json").read_text())
    assert details["notes"]["checkpoint"] == "model" and details["notes"]["generator"] == str(models / "best.pt")


class CountingPool(torch.nn.Module):
    """Stands for torchvision's Inception pool3: float [n, 3, H, W] in [0, 1] -> [n, 6]."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 3)
        self.images = 0

    def forward(self, x):
        self.images += len(x)
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def test_protocols_add_one_group_each_and_cache_the_training_set(tiny, tmp_path):
    from pipeline.metrics.scoring import Models

    pool = CountingPool().eval()
    models = Models(imagenet_inception=pool, imagenet_inception_info="tiny", device="cpu")
    cfg = dict(max_pairs=5, protocol=("defgan", "gfla-market", "dptn-market"), fid_stats=str(tmp_path / "stats"))
    summary, per_pair = _evaluate(tiny, tmp_path / "a", models=models, **cfg)
    train = 3  # build_eval_data: 1 train identity x 3 images, the FID real set (manifest's train split)
    assert pool.images == train + 5  # real set once, generated once: both protocols see the same images
    for name in ("gfla-market", "dptn-market"):
        group = summary["protocols"][name]
        assert group["fid"] > 0 and group["fid_images"] == 5 and group["fid_real_images"] == train
        assert 0 < group["ssim_256"] < 1 and group["ssim_256"] == pytest.approx(summary["model"]["ssim"], abs=1e-6)
        assert group["ssim"] is None and "smaller than the 51x51 SSIM window" in group["ssim_reason"]  # 64x32
        assert group["lpips"] is None and group["lpips_reason"] == "not requested"
    metrics = headline_metrics(summary)
    assert metrics["ssim"] == summary["model"]["ssim"]  # the 2018 keys stay flat
    assert set(metrics["gfla-market"]) == {"fid", "fid_images", "fid_real_images", "ssim_256", "ssim_256_pairs"}
    again, _ = _evaluate(tiny, tmp_path / "b", models=models, **cfg)
    assert pool.images == train + 2 * 5  # the second evaluation read the statistics from the cache
    assert again["protocols"]["gfla-market"]["fid_real_cached"] is True
    assert again["protocols"]["gfla-market"]["fid"] == summary["protocols"]["gfla-market"]["fid"]


class CountingLpips(torch.nn.Module):
    """Stands for LPIPS ([-1, 1] x, y -> [n, 1, 1, 1]); counts pairs."""

    def __init__(self):
        super().__init__()
        self.pairs = 0

    def forward(self, x, y):
        self.pairs += len(x)
        return (x - y).abs().mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1)


def test_lpips_runs_once_per_pair_for_the_2018_keys_and_the_protocols(tiny, tmp_path):
    from pipeline.metrics.scoring import Models

    lp = CountingLpips()
    models = Models(lpips=lp, lpips_info="tiny", device="cpu")
    summary, per_pair = _evaluate(tiny, tmp_path, models=models, max_pairs=5, baselines=False,
                                  protocol=("defgan", "gfla-market", "dptn-market"), fid_stats=str(tmp_path / "s"))
    assert lp.pairs == 5 + 5  # LPIPS (2018 key, gfla and dptn) + mask-LPIPS (gfla and dptn)
    for name in ("gfla-market", "dptn-market"):  # 5 < 64 pairs: gfla's batch shrinks to all of them
        assert summary["protocols"][name]["lpips"] == pytest.approx(summary["model"]["lpips"], rel=1e-12)


def test_frame_cuts_generated_targets_and_the_fid_real_set_alike(tiny, tmp_path):
    """evaluate.frame (DeepFashion's 256x176 on its 256x256 canvas; here 64x16 on 64x32):
    every scored image is the centred frame, and FID's real set is each training image
    brought onto the canvas (resized 128x64 -> 64x32) and cut the same way."""
    import cv2

    from pipeline.metrics.protocol_set import manifest_train_files, read_rgb
    from pipeline.metrics.protocols import recipe, reference_stats_for
    from pipeline.metrics.scoring import Models

    pool = CountingPool().eval()
    models = Models(imagenet_inception=pool, imagenet_inception_info="tiny", device="cpu")
    stats = tmp_path / "stats"
    summary, _ = _evaluate(tiny, tmp_path / "a", models=models, max_pairs=4, frame=(64, 16),
                           protocol=("defgan", "gfla-market"), fid_stats=str(stats))
    assert summary["notes"]["scored_frame"] == "rows 0..63, columns 8..23 of 64x32"
    whole, _ = _evaluate(tiny, tmp_path / "b", max_pairs=4)
    assert summary["model"]["ssim"] != pytest.approx(whole["model"]["ssim"], abs=1e-4)

    root, dataset, files, _, _ = tiny
    cut = tmp_path / "cut"
    cut.mkdir()
    for f in manifest_train_files(files["manifest"], dataset):  # by hand: resize, then cut
        im = cv2.resize(read_rgb(f), (W, H), interpolation=cv2.INTER_AREA)[:, 8:24]
        Image.fromarray(im).save(cut / f"{f.stem}.png")
    want = reference_stats_for(sorted(cut.iterdir()), [recipe("gfla-market")], CountingPool().eval(), "tiny",
                               None, read=read_rgb)["gfla-market"]
    (cached,) = stats.glob("fid-*.npz")
    with np.load(cached) as got:
        np.testing.assert_allclose(got["mu"], want.mu, rtol=1e-6)
        assert int(got["n"]) == want.n == 3


def test_precision_follows_the_checkpoint_on_cuda_and_is_float32_on_cpu(monkeypatch):
    from pipeline.core import device as device_mod
    from pipeline.eval.evaluation import eval_precision, precision_name

    monkeypatch.setattr(device_mod, "cuda_amp_dtype", lambda: torch.bfloat16)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert eval_precision("checkpoint", True, cuda) == torch.bfloat16
    assert eval_precision("checkpoint", False, cuda) is None
    assert eval_precision("checkpoint", None, cuda) is None  # not recorded: float32
    assert eval_precision("float32", True, cuda) is None
    assert eval_precision("amp", False, cuda) == torch.bfloat16
    assert all(eval_precision(s, True, cpu) is None for s in ("checkpoint", "amp", "float32"))
    assert precision_name(None) == "float32" and precision_name(torch.bfloat16) == "bfloat16"
    with pytest.raises(ValueError, match="evaluate.precision"):
        eval_precision("fp8", True, cuda)


def test_truncating_rule_is_used_for_the_pngs_and_written_in_the_details(tiny, tmp_path):
    rounded, _ = _evaluate(tiny, tmp_path / "r", max_pairs=4)
    truncated, _ = _evaluate(tiny, tmp_path / "t", max_pairs=4, uint8="truncate")
    assert (rounded["notes"]["uint8"], truncated["notes"]["uint8"]) == ("round", "truncate")
    assert rounded["notes"]["precision"] == "float32" and rounded["notes"]["trained_amp"] is None
    files = sorted((tmp_path / "r" / "eval" / "images").glob("*.png"))
    r = np.stack([np.asarray(Image.open(f)) for f in files]).astype(int)
    t = np.stack([np.asarray(Image.open(tmp_path / "t" / "eval" / "images" / f.name)) for f in files])
    assert ((r - t) >= 0).all() and ((r - t) <= 1).all() and (r != t).any()


def test_a_smaller_rerun_into_the_same_folder_leaves_only_its_own_images(tiny, tmp_path):
    _, full = _evaluate(tiny, tmp_path)
    images = tmp_path / "eval" / "images"
    assert len(full) > 2 and len(list(images.glob("*.png"))) == len(full)
    _, small = _evaluate(tiny, tmp_path, max_pairs=2)
    assert sorted(p.name for p in images.iterdir()) == sorted(small["file"])  # no stale images
    assert sorted(p.name for p in (tmp_path / "eval").iterdir() if p.name.startswith(".")) == []
