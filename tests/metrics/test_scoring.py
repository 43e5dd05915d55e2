"""The scorer: one batch, accumulation (FID/IS via an injected network), folders, the stage."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pipeline.core.config import EvaluateConfig, PoseConfig
from pipeline.core.keypoints import J, write_annotation_csv
from pipeline.metrics.inception import write_random_weights
from pipeline.metrics.masks import apply_masks, person_masks
from pipeline.metrics.scoring import Models, Scorer, load_models, match_folders, score_batch, score_folders

USERSTUDY = "data/deformable-gan-userstudy"
OFFLINE = EvaluateConfig(inception_weights="/nonexistent/inception.pth", lpips_weights="/nonexistent/alex.pth")


class TinyFeatures(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 3)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        f = self.conv(x / 255.0).mean(dim=(2, 3))
        return f, self.fc(f)


def standing_pose() -> np.ndarray:
    kp = np.full((18, 2), -1.0)
    for name, xy in {"nose": (32, 12), "neck": (32, 24), "r_shoulder": (24, 26), "l_shoulder": (40, 26),
                     "r_hip": (27, 64), "l_hip": (37, 64), "r_knee": (27, 90), "l_knee": (37, 90)}.items():
        kp[J[name]] = xy
    return kp


def copy_pairs(tmp_path, src, ids):
    """Copy user-study pairs `ids` into tmp real/ and gen/ folders."""
    real, gen = tmp_path / "real", tmp_path / "gen"
    real.mkdir(exist_ok=True), gen.mkdir(exist_ok=True)
    for i in ids:
        shutil.copy(src / "real" / f"{i}.jpg", real / f"{i}.jpg")
        shutil.copy(src / "generated" / f"{i}.jpg", gen / f"{i}.jpg")
    return real, gen


def test_score_batch_identical_images():
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (3, 128, 64, 3), dtype=np.uint8)
    kp = np.stack([standing_pose()] * 3)
    kp[2] = -1  # no keypoints for the last pair: its mask metrics are undefined
    out = score_batch(real, real.copy(), kp)
    np.testing.assert_allclose(out["ssim"], 1.0, atol=1e-6)
    assert (out["l1"] == 0).all()
    np.testing.assert_allclose(out["mask_ssim"][:2], 1.0, atol=1e-6)
    assert (out["masked_l1"][:2] == 0).all()
    assert np.isnan(out["mask_ssim"][2]) and np.isnan(out["masked_l1"][2])
    assert "lpips" not in out and "ds" not in out  # no models given
    with pytest.raises(ValueError, match="kp_target"):
        score_batch(real, real, kp[:, :17])


def test_mask_ssim_ignores_the_background():
    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, (1, 128, 64, 3), dtype=np.uint8)
    gen = real.copy()
    gen[:, :, 55:] = 0  # change only pixels far from the body
    out = score_batch(real, gen, standing_pose()[None])
    assert out["ssim"][0] < 0.99 and out["mask_ssim"][0] == pytest.approx(1.0, abs=1e-6)


def test_scorer_with_injected_feature_network():
    rng = np.random.default_rng(2)
    real = rng.integers(0, 256, (12, 32, 24, 3), dtype=np.uint8)
    gen = np.clip(real.astype(int) + rng.integers(-30, 30, real.shape), 0, 255).astype(np.uint8)
    kp = np.tile(standing_pose()[None] / 4, (12, 1, 1))
    scorer = Scorer(Models(inception=TinyFeatures().eval(), inception_info="tiny"), batch_size=5)
    for s in (0, 7):
        scorer.add([f"{i}.jpg" for i in range(s, s + (7 if s == 0 else 5))], real[s:s + 7], gen[s:s + 7], kp[s:s + 7])
    summary, table = scorer.result()
    assert summary["n_pairs"] == 12 and len(table) == 12
    assert summary["fid"] > 0 and 1.0 <= summary["is"] <= 3.0 and 1.0 <= summary["mask_is"] <= 3.0
    assert "real targets" in summary["fid_reference"]
    assert summary["lpips"] is None and summary["lpips_reason"] == "not requested"
    same = Scorer(Models(inception=TinyFeatures().eval()))
    same.add(list("abcdef"), real[:6], real[:6])
    s2, _ = same.result()
    assert abs(s2["fid"]) < 1e-5 and s2["mask_ssim"] is None and "keypoints" in s2["mask_ssim_reason"]


class CountingFeatures(TinyFeatures):
    """TinyFeatures that counts the images it is run on."""

    def __init__(self):
        super().__init__()
        self.images = 0

    def forward(self, x):
        self.images += len(x)
        return super().forward(x)


def test_scorers_share_the_real_targets_inception_outputs():
    rng = np.random.default_rng(3)
    real = rng.integers(0, 256, (6, 32, 24, 3), dtype=np.uint8)
    gen = np.clip(real.astype(int) + rng.integers(-40, 40, real.shape), 0, 255).astype(np.uint8)
    kp = np.tile(standing_pose()[None] / 4, (6, 1, 1))
    net = CountingFeatures().eval()
    models = Models(inception=net, inception_info="tiny")
    alone = Scorer(models)
    alone.add(list("abcdef"), real, gen, kp)
    expected, _ = alone.result()
    assert net.images == 18  # real, generated, masked generated

    net.images = 0
    ref = Scorer(models)
    shared = Scorer(models, reference=ref)
    itself = Scorer(models)
    targets_of_ref = Scorer(models, reference=ref)
    for s in (0, 3):
        batch = real[s:s + 3]
        ref.add(list("abc"), batch, gen[s:s + 3], kp[s:s + 3])
        shared.add(list("abc"), batch, gen[s:s + 3], kp[s:s + 3])
        itself.add(list("abc"), batch, batch, kp[s:s + 3])
        targets_of_ref.add(list("abc"), batch, batch, kp[s:s + 3])
    # ref 3 passes, shared 2 (no real-target pass), itself 2 (targets once, as both sides),
    # targets_of_ref 1 (masked targets; the targets' outputs are ref's)
    assert net.images == 6 * 3 + 6 * 2 + 6 * 2 + 6 * 1
    got, _ = shared.result()
    for key in ("fid", "is", "mask_is"):
        assert got[key] == pytest.approx(expected[key], rel=1e-6)
    own, _ = itself.result()
    assert abs(own["fid"]) < 1e-5 and own["is"] >= 1.0
    from_ref, _ = targets_of_ref.result()
    for key in ("fid", "is", "mask_is"):
        assert from_ref[key] == pytest.approx(own[key], rel=1e-6, abs=1e-6)


def test_empty_scorer_reports_null_with_reasons():
    summary, table = Scorer(Models(inception=TinyFeatures().eval(), inception_info="tiny")).result()
    assert summary["n_pairs"] == 0 and len(table) == 0
    for key in ("ssim", "l1", "fid", "is", "mask_is"):
        assert summary[key] is None and summary[f"{key}_reason"] == "no pairs scored"


def test_pckh_without_head_points_says_so(tmp_path, shared):
    real, gen = copy_pairs(tmp_path, shared(USERSTUDY), range(2))
    body = standing_pose()
    body[[J["nose"], J["neck"]]] = -1  # no head point: PCKh has no head size
    csv = tmp_path / "kp.csv"
    write_annotation_csv(csv, ["0.jpg", "1.jpg"], np.stack([body] * 2))
    cfg = EvaluateConfig(inception_weights=OFFLINE.inception_weights, lpips_weights=OFFLINE.lpips_weights,
                         pose_weights=str(shared("weights/yolo11n-pose.pt")))
    summary, _ = score_folders(real, gen, csv, cfg, real_pckh=True, allow_download=False)
    assert 0 < summary["ds"] <= 1 and 0 < summary["mask_ssim"] < 1
    for key in ("pckh", "pckh_real"):
        assert summary[key] is None and "head points" in summary[f"{key}_reason"]


def test_folders_must_match(tmp_path, shared):
    src = shared(USERSTUDY)
    real, gen = copy_pairs(tmp_path, src, range(3))
    shutil.copy(src / "real" / "3.jpg", real / "3.jpg")
    shutil.copy(src / "generated" / "4.jpg", gen / "4.jpg")
    with pytest.raises(ValueError, match=r"only in .*real: 3.*only in .*gen: 4"):
        match_folders(real, gen)
    (real / "3.jpg").unlink(), (gen / "4.jpg").unlink()
    assert [p.name for p, _ in match_folders(real, gen)] == ["0.jpg", "1.jpg", "2.jpg"]
    import cv2  # a generated image of another size is an error naming the file
    cv2.imwrite(str(gen / "2.jpg"), np.zeros((64, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"2\.jpg: size 32x64"):
        score_folders(real, gen, cfg=OFFLINE, allow_download=False)


def test_a_truncated_image_is_recorded_and_skipped(tmp_path, shared):
    real, gen = copy_pairs(tmp_path, shared(USERSTUDY), range(3))
    broken = gen / "1.jpg"
    broken.write_bytes(broken.read_bytes()[:1000])  # cv2 alone would decode it half grey
    summary, table = score_folders(real, gen, cfg=OFFLINE, allow_download=False)
    assert summary["n_pairs"] == 2 and table["name"].tolist() == ["0.jpg", "2.jpg"]
    assert len(summary["skipped"]) == 1
    assert str(broken) in summary["skipped"][0] and "truncated JPEG" in summary["skipped"][0]


def test_userstudy_end_to_end_with_detected_keypoints(shared):
    src = shared(USERSTUDY)
    weights = shared("weights/yolo11n-pose.pt")
    cfg = EvaluateConfig(inception_weights=OFFLINE.inception_weights, lpips_weights=OFFLINE.lpips_weights,
                         pose_weights=str(weights))
    summary, table = score_folders(src / "real", src / "generated", cfg=cfg, detect_keypoints=True,
                                   allow_download=False)
    assert summary["n_pairs"] == 55 and len(table) == 55
    assert 0.2 < summary["ssim"] < 0.5 and 0.6 < summary["mask_ssim"] < 0.95
    assert summary["mask_ssim"] > summary["ssim"]
    assert "detected on the real targets" in summary["keypoints_source"]
    assert 0.5 < summary["ds"] <= 1 and 0 < summary["pckh"] <= 1
    for key in ("fid", "is", "mask_is", "lpips"):
        assert summary[key] is None and summary[f"{key}_reason"]
    assert table["name"].tolist()[:3] == ["0.jpg", "1.jpg", "2.jpg"]


def test_keypoint_file_and_the_stage_cli(tmp_path, shared):
    real, gen = copy_pairs(tmp_path, shared(USERSTUDY), range(4))
    csv = tmp_path / "kp.csv"
    write_annotation_csv(csv, ["0.jpg", "1.jpg", "2.jpg"], np.stack([standing_pose()] * 3))  # 3.jpg absent
    params = tmp_path / "params.yaml"
    params.write_text(
        "evaluate:\n  inception_weights: /nonexistent/inception.pth\n  lpips_weights: /nonexistent/alex.pth\n"
        "  pose_weights: /nonexistent/pose.pt\n"
    )
    from stages.evaluate import main

    out, per_pair = tmp_path / "m" / "metrics.json", tmp_path / "pp.parquet"
    assert main(["--params", str(params), "--real", str(real), "--generated", str(gen), "--keypoints", str(csv),
                 "--out", str(out), "--per-pair", str(per_pair)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["n_pairs"] == 4 and metrics["n_pairs_with_keypoints"] == 3
    assert 0 < metrics["ssim"] < 1 and 0 < metrics["mask_ssim"] < 1
    assert metrics["fid"] is None and "evaluate.inception_weights" in metrics["fid_reason"]
    assert metrics["ds"] is None and "evaluate.pose_weights" in metrics["ds_reason"]
    table = pd.read_parquet(per_pair)
    assert len(table) == 4 and np.isnan(table["mask_ssim"].iloc[3])
    with pytest.raises(SystemExit):
        main(["--params", str(params), "--real", str(real)])


# --------------------------------------------------------------------------- real networks


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """Random (seeded) weights of torch-fidelity's Inception graph, in its state-dict layout."""
    return write_random_weights(tmp_path_factory.mktemp("weights") / "inception_random.pth", seed=1)


def smooth_pairs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Varied 'real' 128x64 images (colour, contrast, blur differ per image) and perturbed
    'generated' ones (shifted, recoloured, noisy), uint8 RGB: a random Inception tells them apart."""
    import cv2

    rng = np.random.default_rng(seed)
    base, contrast = rng.uniform(0, 255, (n, 1, 1, 3)), rng.uniform(0.1, 1.0, (n, 1, 1, 1))
    noise = np.stack([cv2.GaussianBlur(rng.normal(0, 80, (128, 64, 3)), (0, 0), s) for s in rng.uniform(0.5, 6, n)])
    real = np.clip(base + contrast * noise, 0, 255)
    gen = np.roll(real, 3, axis=2) * rng.uniform(0.6, 1.0, (n, 1, 1, 3)) + rng.normal(0, 10, real.shape)
    return real.astype(np.uint8), np.clip(gen, 0, 255).astype(np.uint8)


def write_pngs(folder, images):
    from PIL import Image

    folder.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:03d}.png")
    return str(folder)


@pytest.mark.slow  # 72 Inception passes at 299x299: ~10 s on 2 idle cores
def test_scorer_equals_torch_fidelity_calculate_metrics(tmp_path, inception_file):
    """IS, mask-IS and FID of the Scorer equal the library's own entry point on PNG folders."""
    import torch_fidelity

    n = 12  # not a multiple of the 10 splits: the split boundaries matter
    real, gen = smooth_pairs(n)
    kp = np.tile(standing_pose()[None], (n, 1, 1))
    models = load_models(EvaluateConfig(inception_weights=str(inception_file)), use_lpips=False,
                         use_detector=False, allow_download=False, device="cpu")
    assert models.inception is not None, models.inception_info
    scorer = Scorer(models, batch_size=n)
    scorer.add([f"{i}.png" for i in range(n)], real, gen, kp)
    ours, _ = scorer.result()

    common = dict(cuda=False, batch_size=n, samples_shuffle=False, isc_splits=10, cache=False, verbose=False,
                  save_cpu_ram=True,  # no DataLoader worker processes
                  feature_extractor_weights_path=str(inception_file))
    gen_dir, real_dir = write_pngs(tmp_path / "gen", gen), write_pngs(tmp_path / "real", real)
    masked_dir = write_pngs(tmp_path / "masked", apply_masks(gen, person_masks(kp, 128, 64)))
    ref = torch_fidelity.calculate_metrics(input1=gen_dir, input2=real_dir, isc=True, fid=True, **common)
    ref_masked = torch_fidelity.calculate_metrics(input1=masked_dir, isc=True, **common)
    assert ours["is"] == pytest.approx(ref["inception_score_mean"], rel=1e-6)
    assert ours["is_std"] == pytest.approx(ref["inception_score_std"], rel=1e-5, abs=1e-9)
    assert ours["mask_is"] == pytest.approx(ref_masked["inception_score_mean"], rel=1e-6)
    assert ours["mask_is_std"] == pytest.approx(ref_masked["inception_score_std"], rel=1e-5, abs=1e-9)
    assert ours["fid"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-5)
    # Far from the trivial values, so the 1e-6 agreement above is a real check.
    assert ours["fid"] > 1 and ours["is"] > 1.005 and ours["mask_is"] != pytest.approx(ours["is"], rel=1e-3)


def test_load_models_resolves_every_file_and_never_raises(tmp_path, inception_file):
    import lpips
    from torchvision.models import alexnet

    alex = tmp_path / "alexnet.pth"
    torch.save(alexnet(weights=None).state_dict(), alex)
    lin = f"{lpips.__path__[0]}/weights/v0.1/alex.pth"
    cfg = EvaluateConfig(inception_weights=str(inception_file), lpips_weights=lin, alexnet_weights=str(alex),
                         pose_weights=str(tmp_path / "no_pose.pt"))
    m = load_models(cfg, allow_download=False, device="cpu")
    assert m.inception is not None and m.lpips is not None, (m.inception_info, m.lpips_info)
    assert m.detector is None and "evaluate.pose_weights" in m.detector_info and "no_pose.pt" in m.detector_info
    real, gen = smooth_pairs(2)
    per = score_batch(real, gen, models=m)
    assert per["lpips"].shape == (2,) and (per["lpips"] > 0).all()

    missing = EvaluateConfig(inception_weights=str(tmp_path / "i.pth"), lpips_weights=str(tmp_path / "l.pth"),
                             alexnet_weights=str(alex), pose_weights=None)
    m = load_models(missing, PoseConfig(weights=str(tmp_path / "yolo.pt")), allow_download=False, device="cpu")
    assert m.inception is None and "evaluate.inception_weights" in m.inception_info
    assert m.lpips is None and "evaluate.lpips_weights" in m.lpips_info
    assert m.detector is None and "pose.weights" in m.detector_info and "yolo.pt" in m.detector_info
    null = EvaluateConfig(inception_weights=None, lpips_weights=None, alexnet_weights=None, pose_weights=None)
    m = load_models(null, PoseConfig(weights=""), allow_download=False, device="cpu")
    assert "is null" in m.inception_info and "is null" in m.lpips_info and "is null" in m.detector_info
    summary, _ = Scorer(m).result()
    assert summary["fid"] is None and summary["fid_reason"] == m.inception_info
