"""Each protocol against a transcription of its family's script (tests/support/family_scripts.py)
on the same small image sets, with the same seeded networks injected into both; the batch-drop,
padding and resize rules on hand-made cases; the FID real-set statistics cache."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pipeline.metrics import imagenet_inception, protocols
from pipeline.metrics.lpips import LIN_KEYS, build_lpips
from pipeline.metrics.protocols import Nets, ProtocolScorer, kept, pad_white, reference_stats, resize
from tests.support import family_scripts as fam

TOL = 1e-6


class TinyPool(nn.Module):
    """Stands for the Inception pool3 (same contract: float [n, 3, H, W] in [0, 1] -> [n, D])."""

    def __init__(self, dim: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, dim, 5, stride=2)
        self.calls = 0

    @torch.no_grad()
    def forward(self, x):
        self.calls += len(x)
        return torch.relu(self.conv(x)).mean(dim=(2, 3)) * 10


class TinyTF(nn.Module):
    """Stands for the TF-2015 extractor (uint8 [n, 3, H, W] -> (features, logits))."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 6, 3)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        f = self.conv(x.float() / 255.0).mean(dim=(2, 3))
        return f, self.fc(f) * 3


def as_script_model(net):
    return lambda batch: [net(batch)[..., None, None]]


@pytest.fixture(scope="module")
def lpips_model():
    from torchvision.models import alexnet

    torch.manual_seed(2)
    alex = alexnet(weights=None).state_dict()
    gen = torch.Generator().manual_seed(3)
    lin = {k: torch.rand((1, c, 1, 1), generator=gen) for k, c in zip(LIN_KEYS, (64, 192, 384, 256, 256))}
    return build_lpips(alex, lin)


def person_images(n, h, w, seed):
    """Smooth random images (SSIM and LPIPS see structure, not only noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, h // 8, w // 8, 3)).astype(np.float32)
    big = F.interpolate(torch.from_numpy(small).permute(0, 3, 1, 2), size=(h, w), mode="bilinear").permute(0, 2, 3, 1).numpy()
    return np.clip(big + rng.normal(0, 12, big.shape), 0, 255).astype(np.uint8)


def write(folder, images, names):
    folder.mkdir(parents=True, exist_ok=True)
    for im, n in zip(images, names):
        Image.fromarray(im).save(folder / f"{n}.png")
    return [folder / f"{n}.png" for n in names]


def keypoints(n, h, w, seed):
    rng = np.random.default_rng(seed)
    kp = np.stack([rng.uniform(4, w - 4, (n, 18)), rng.uniform(4, h - 4, (n, 18))], -1)
    kp[rng.random((n, 18)) < 0.3] = -1
    return kp


def score(rec, real, gen, nets, reference, kp=None, batch_size=4):
    s = ProtocolScorer(rec, nets, reference, batch_size=batch_size)
    for i in range(0, len(real), 3):  # several batches, as in an evaluation
        s.add(real[i:i + 3], gen[i:i + 3], None if kp is None else kp[i:i + 3])
    return s.result()


# --------------------------------------------------------------------------- rules


def test_batch_drop_rule():
    assert kept(8570, 64) == 8512  # DeepFashion: 58 test pairs never enter GFLA's / PIDM's FID
    assert kept(12000, 64) == 11968
    assert kept(128, 64) == 128 and kept(10, 64) == 10  # fewer than a batch: the batch shrinks
    assert kept(130, None) == 130 and kept(130, 1) == 130


def test_white_padding_equals_patn_and_dptn():
    img = person_images(2, 256, 176, 0)
    padded = pad_white(img, 256)
    assert padded.shape == (2, 256, 256, 3) and padded.dtype == np.uint8
    assert (padded[:, :, :40] == 255).all() and (padded[:, :, 216:] == 255).all()
    assert np.array_equal(padded[0], fam.add_bounding(img[0]))
    assert np.array_equal(padded[1], fam.pad_256(img[1]).astype(np.uint8))
    assert pad_white(padded, 256) is padded  # already wide enough


def test_resize_rules_on_hand_made_cases():
    img = np.zeros((1, 4, 4, 3), np.uint8)
    img[0, :, 2:] = 200  # a vertical edge
    lin = resize(img, (4, 2), "cv2_linear")  # each output pixel averages 2 input columns
    assert np.allclose(lin[0, :, 0], 0) and np.allclose(lin[0, :, 1], 200)
    const = np.full((1, 8, 6, 3), 77, np.uint8)
    for how in ("cv2_linear", "pil_bicubic"):
        assert np.array_equal(resize(const, (4, 3), how), np.full((1, 4, 3, 3), 77, np.float32))
    # CFLD's x / 255 * 255 lands a hair below 77 at some pixels and truncation makes it 76.
    assert set(np.unique(resize(const, (4, 3), "bicubic_aa_uint8"))) <= {76.0, 77.0}
    for how in ("cv2_linear", "bicubic_aa_uint8", "pil_bicubic"):
        assert np.array_equal(resize(img, (4, 4), how), img.astype(np.float32))  # same size: unchanged
    # CFLD truncates to uint8 after the bicubic resize: 0.5 up-rounds nowhere.
    edge = np.zeros((1, 2, 4, 3), np.uint8)
    edge[0, :, 1] = 101
    x = torch.from_numpy(edge).permute(0, 3, 1, 2).float() / 255
    ref = F.interpolate(x, size=(2, 2), mode="bicubic", antialias=True) * 255
    got = resize(edge, (2, 2), "bicubic_aa_uint8")
    assert np.array_equal(got, np.floor(ref.clamp(0, 255)).permute(0, 2, 3, 1).numpy())
    pil = resize(person_images(1, 64, 48, 1), (32, 22), "pil_bicubic")
    from torchvision import transforms

    tv = transforms.Resize([32, 22], interpolation=transforms.InterpolationMode.BICUBIC, antialias=True)
    assert np.array_equal(pil[0], np.asarray(tv(Image.fromarray(person_images(1, 64, 48, 1)[0]))).astype(np.float32))


# --------------------------------------------------------------------------- Market-1501


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    root = tmp_path_factory.mktemp("market")
    names = [f"p{i:02d}" for i in range(10)]
    real, gen = person_images(10, 128, 64, 10), person_images(10, 128, 64, 11)
    train = person_images(9, 128, 64, 12)
    kp = keypoints(10, 128, 64, 13)
    return {"real": real, "gen": gen, "kp": kp, "names": names,
            "real_files": write(root / "gt", real, names), "gen_files": write(root / "gen", gen, names),
            "train_files": write(root / "train", train, [f"t{i:02d}" for i in range(9)]),
            "root": root}


@pytest.mark.parametrize("name", ["gfla-market", "dptn-market"])
def test_market_protocols_equal_the_scripts(name, market, lpips_model, tmp_path):
    rec = dataclasses.replace(protocols.recipe(name), fid_batch=4, mask_lpips_batch=4,
                              lpips_batch=4 if name == "gfla-market" else None)
    pool = TinyPool()
    nets = Nets(imagenet=pool, imagenet_info="tiny", lpips=lpips_model, lpips_info="random")
    ref = reference_stats(market["train_files"], rec, pool, "tiny", None, read=fam.imread)
    ours = score(rec, market["real"], market["gen"], nets, ref, market["kp"])

    fid = fam.FID(as_script_model(pool), batch_size=4).calculate_from_disk(market["root"] / "gen", market["root"] / "train")
    ssim, ssim_256 = fam.reconstruction(market["gen_files"], market["real_files"])
    lp = fam.lpips_from_disk(lpips_model, market["gen_files"], market["real_files"],
                             batch_size=4 if name == "gfla-market" else 1)
    yx = {f"{n}.png": np.where(k < 0, -1, k[:, ::-1]) for n, k in zip(market["names"], market["kp"])}
    mask_lp = fam.lpips_from_disk(lpips_model, market["gen_files"], market["real_files"], batch_size=4, annotations=yx)

    assert ours["fid_images"] == 8 and ours["fid_real_images"] == 8
    assert ours["lpips_pairs"] == (8 if name == "gfla-market" else 10) and ours["mask_lpips_pairs"] == 8
    for key, want in (("fid", fid), ("ssim", ssim), ("ssim_256", ssim_256), ("lpips", lp), ("mask_lpips", mask_lp)):
        assert ours[key] == pytest.approx(want, rel=TOL, abs=TOL), key


# --------------------------------------------------------------------------- DeepFashion


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion")
    names = [f"f{i:02d}" for i in range(6)]
    real, gen = person_images(6, 256, 176, 20), person_images(6, 256, 176, 21)
    return {"real": real, "gen": gen, "names": names, "root": root,
            "real_files": write(root / "gt", real, names), "gen_files": write(root / "gen", gen, names),
            "train_files": write(root / "train", person_images(5, 256, 176, 22), [f"t{i}" for i in range(5)])}


def test_patn_fashion_pads_before_ssim_and_is(fashion):
    tf = TinyTF()
    nets = Nets(tf2015=tf, tf2015_info="tiny")
    ours = score(protocols.recipe("patn-fashion"), fashion["real"], fashion["gen"], nets, None)
    assert ours["ssim"] == pytest.approx(fam.patn_ssim(fashion["gen"], fashion["real"]), rel=TOL, abs=TOL)
    logits = tf(torch.from_numpy(pad_white(fashion["gen"], 256)).permute(0, 3, 1, 2))[1].detach().numpy()
    from tests.metrics.test_inception import openai_inception_score

    assert ours["is"] == pytest.approx(openai_inception_score(logits, splits=6)[0], rel=TOL)
    unpadded = score(dataclasses.replace(protocols.recipe("patn-fashion"), pad_width=None), fashion["real"],
                     fashion["gen"], nets, None)
    assert unpadded["ssim"] < ours["ssim"]  # white borders agree: padding raises SSIM


@pytest.mark.parametrize("name", ["gfla-fashion", "dptn-fashion"])
def test_fashion_gfla_dptn_equal_the_scripts(name, fashion, lpips_model, tmp_path):
    rec = dataclasses.replace(protocols.recipe(name), fid_batch=4, lpips_batch=4 if name == "gfla-fashion" else None)
    pool = TinyPool()
    nets = Nets(imagenet=pool, imagenet_info="tiny", lpips=lpips_model, lpips_info="random")
    ref = reference_stats(fashion["train_files"], rec, pool, "tiny", None, read=fam.imread)
    ours = score(rec, fashion["real"], fashion["gen"], nets, ref)
    if name == "gfla-fashion":  # GFLA's folders hold 256x256 images: the padded ones
        gen_files = write(tmp_path / "gen", pad_white(fashion["gen"], 256), fashion["names"])
        real_files = write(tmp_path / "gt", pad_white(fashion["real"], 256), fashion["names"])
        write(tmp_path / "train", pad_white(np.stack([fam.imread(f) for f in fashion["train_files"]]), 256),
              [f.stem for f in fashion["train_files"]])
        gen_dir, train_dir, pad = tmp_path / "gen", tmp_path / "train", False
    else:
        gen_files, real_files = fashion["gen_files"], fashion["real_files"]
        gen_dir, train_dir, pad = fashion["root"] / "gen", fashion["root"] / "train", True
    fid = fam.FID(as_script_model(pool), batch_size=4).calculate_from_disk(gen_dir, train_dir)
    ssim, ssim_256 = fam.reconstruction(gen_files, real_files, pad=pad)
    lp = fam.lpips_from_disk(lpips_model, gen_files, real_files, batch_size=4 if name == "gfla-fashion" else 1)
    for key, want in (("fid", fid), ("ssim", ssim), ("ssim_256", ssim_256), ("lpips", lp)):
        assert ours[key] == pytest.approx(want, rel=TOL, abs=TOL), key


def test_pidm_fashion_equals_its_script(fashion, lpips_model, tmp_path):
    """PIDM's outputs and targets are 256x256; FID and LPIPS see them cv2-resized to 176x256."""
    rec = dataclasses.replace(protocols.recipe("pidm-fashion"), fid_batch=4, lpips_batch=4)
    real, gen = pad_white(fashion["real"], 256), pad_white(fashion["gen"], 256)
    train = pad_white(np.stack([fam.imread(f) for f in fashion["train_files"]]), 256)
    gen_files = write(tmp_path / "gen", gen, fashion["names"])
    real_files = write(tmp_path / "gt", real, fashion["names"])
    train_files = write(tmp_path / "train", train, [f"t{i}" for i in range(5)])
    pool = TinyPool()
    nets = Nets(imagenet=pool, imagenet_info="tiny", lpips=lpips_model, lpips_info="random")
    ours = score(rec, real, gen, nets, reference_stats(train_files, rec, pool, "tiny", None, read=fam.imread))
    fid = fam.FID(as_script_model(pool), batch_size=4, load=fam.pidm_load).calculate_from_disk(tmp_path / "gen", tmp_path / "train")
    ssim, ssim_256 = fam.reconstruction(gen_files, real_files, sigma=1.2)
    lp = fam.lpips_from_disk(lpips_model, gen_files, real_files, batch_size=4, load=fam.pidm_load)
    for key, want in (("fid", fid), ("ssim", ssim), ("ssim_256", ssim_256), ("lpips", lp)):
        assert ours[key] == pytest.approx(want, rel=TOL, abs=TOL), key


def test_cfld_fashion_equals_its_script(fashion, lpips_model, tmp_path):
    """CFLD: targets and training images from a larger original (PIL bicubic to 256x176),
    generated 256x256 (bicubic + antialias, truncated to uint8); every image counts."""
    rec = protocols.recipe("cfld-fashion")
    real = person_images(6, 384, 264, 30)
    gen = pad_white(fashion["gen"], 256)
    train = person_images(5, 384, 264, 31)
    gen_files = write(tmp_path / "gen", gen, fashion["names"])
    real_files = write(tmp_path / "gt", real, fashion["names"])
    train_files = write(tmp_path / "train", train, [f"t{i}" for i in range(5)])
    pool = TinyPool()
    nets = Nets(imagenet=pool, imagenet_info="tiny", lpips=lpips_model, lpips_info="random")
    ours = score(rec, real, gen, nets, reference_stats(train_files, rec, pool, "tiny", None, read=fam.imread))
    want = fam.cfld(gen_files, real_files, train_files, None, lpips_model, inception=pool)
    assert ours["fid_images"] == 6 and ours["lpips_pairs"] == 6
    for key in ("fid", "ssim", "ssim_256", "lpips"):
        assert ours[key] == pytest.approx(want[key], rel=TOL, abs=TOL), key


# --------------------------------------------------------------------------- networks, cache


def test_reference_statistics_are_cached(market, tmp_path):
    rec = dataclasses.replace(protocols.recipe("gfla-market"), fid_batch=4)
    pool = TinyPool()
    first = reference_stats(market["train_files"], rec, pool, "tiny", tmp_path, read=fam.imread)
    assert pool.calls == 8 and not first.cached and len(list(tmp_path.glob("fid-*.npz"))) == 1
    again = reference_stats(market["train_files"], rec, pool, "tiny", tmp_path, read=fam.imread)
    assert pool.calls == 8 and again.cached  # no Inception pass over the real set
    assert np.array_equal(again.mu, first.mu) and np.array_equal(again.sigma, first.sigma) and again.n == 8
    reference_stats(market["train_files"][:5], rec, pool, "tiny", tmp_path, read=fam.imread)  # other files
    reference_stats(market["train_files"], dataclasses.replace(rec, fid_batch=64), pool, "tiny", tmp_path, read=fam.imread)
    reference_stats(market["train_files"], rec, pool, "other weights", tmp_path, read=fam.imread)
    assert pool.calls == 8 + 4 + 9 + 8 and len(list(tmp_path.glob("fid-*.npz"))) == 4


def test_imagenet_inception_equals_the_scripts_blocks():
    """Our pool3 (torchvision's network, the scripts' resize and input scaling) against the
    InceptionV3 block stack of GFLA's script/inception.py, on seeded random weights."""
    state = imagenet_inception.random_state_dict(0)
    ours = imagenet_inception.ImagenetPool3(state)
    theirs = fam.InceptionBlocks(state)
    x = np.random.default_rng(0).random((2, 128, 64, 3)).astype(np.float32)
    got = imagenet_inception.pool3(x, ours)
    want = theirs(torch.from_numpy(x).permute(0, 3, 1, 2))[0].reshape(2, -1).double().numpy()
    assert got.shape == (2, 2048) and want.std() > 1e-3
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_imagenet_inception_offline_is_null_with_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("DEFORMABLE_GAN_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("DEFORMABLE_GAN_WEIGHTS_URL", "http://127.0.0.1:9/x")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    net, reason = imagenet_inception.load_imagenet_inception("inception_v3_imagenet", allow_download=False)
    assert net is None and "inception_v3_imagenet" in reason and "\n" not in reason
    net, reason = imagenet_inception.load_imagenet_inception(None)
    assert net is None and "null" in reason
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(3)}, bad)
    net, reason = imagenet_inception.load_imagenet_inception(str(bad))
    assert net is None and "unusable" in reason


def test_unknown_protocol_is_one_line():
    with pytest.raises(ValueError, match="unknown protocol 'nope'"):
        protocols.recipe("nope")


def test_stage_scores_two_folders_under_every_protocol(market, tmp_path, capsys):
    """python -m stages.evaluate --real --generated --protocol ... --fid-real: one group per
    protocol; offline without Inception / LPIPS weights those metrics are null with the reason."""
    from stages.evaluate import main

    params = tmp_path / "params.yaml"
    params.write_text("evaluate:\n  inception_weights: null\n  lpips_weights: null\n  pose_weights: /nonexistent/pose.pt\n"
                      "  imagenet_inception_weights: /nonexistent/inception_v3.pth\n"
                      f"  fid_stats: {tmp_path / 'stats'}\n")
    out = tmp_path / "metrics.json"
    names = [n for n in protocols.RECIPES]
    argv = ["--params", str(params), "--real", str(market["root"] / "gt"), "--generated", str(market["root"] / "gen"),
            "--fid-real", str(market["root"] / "train"), "--out", str(out)]
    assert main(argv + [a for n in names for a in ("--protocol", n)]) == 0
    import json

    got = json.loads(out.read_text())
    assert 0 < got["ssim"] < 1 and set(got["protocols"]) == set(names) - {"defgan"}
    for name, group in got["protocols"].items():
        assert 0 < group["ssim"] < 1, name
        if "fid" in protocols.recipe(name).metrics:
            assert group["fid"] is None and "imagenet_inception_weights" in group["fid_reason"], name
        if "lpips" in protocols.recipe(name).metrics:
            assert group["lpips"] is None and "lpips_weights is null" in group["lpips_reason"], name
    assert got["protocols"]["patn-fashion"]["is_reason"].startswith("evaluate.inception_weights is null")
    capsys.readouterr()
    assert main(argv + ["--protocol", "gfla"]) == 2  # one line, exit 2 (stages/cli.py)
    assert "unknown protocol 'gfla'" in capsys.readouterr().err
