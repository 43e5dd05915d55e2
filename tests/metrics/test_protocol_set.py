"""Several protocols at once: what they compute alike is computed once, and every protocol's
numbers equal those it gives scored alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pipeline.metrics import protocols
from pipeline.metrics.protocol_set import ProtocolSet, read_rgb
from pipeline.metrics.protocols import Nets, ProtocolScorer, prep_key, reference_stats_for


class CountingPool(nn.Module):
    """Stands for the Inception pool3 (float [n, 3, H, W] in [0, 1] -> [n, D]); counts images."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 5, stride=2)
        self.calls = 0

    @torch.no_grad()
    def forward(self, x):
        self.calls += len(x)
        return torch.relu(self.conv(x)).mean(dim=(2, 3)) * 10


class CountingLpips(nn.Module):
    """Stands for LPIPS ([-1, 1] x, y -> [n, 1, 1, 1]); counts pairs."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, y):
        self.calls += len(x)
        return (x - y).abs().mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1)


def images(n: int, h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_prep_key_treats_no_op_preparations_as_none():
    pidm, gfla = protocols.recipe("pidm-fashion"), protocols.recipe("gfla-fashion")
    assert prep_key(pidm, "fid", "generated", (1, 256, 176, 3)) == (None, None)  # resize to own size
    assert prep_key(pidm, "fid", "generated", (1, 256, 256, 3)) == (None, ((256, 176), "cv2_linear"))
    assert prep_key(gfla, "fid", "target", (1, 256, 176, 3)) == (256, None)
    assert prep_key(gfla, "fid", "target", (1, 256, 256, 3)) == (None, None)  # already 256 wide
    assert prep_key(pidm, "fid", "generated", (1, 256, 176, 3)) == prep_key(
        protocols.recipe("dptn-fashion"), "fid", "generated", (1, 256, 176, 3))


@pytest.mark.parametrize("names, dataset", [
    (["gfla-market", "dptn-market"], "market"),
    (["gfla-fashion", "dptn-fashion", "pidm-fashion", "cfld-fashion"], "fashion"),
])
def test_protocols_share_their_work_and_keep_their_numbers(tmp_path, names, dataset):
    h, w = (128, 64) if dataset == "market" else (256, 176)
    real, gen, train = images(10, h, w, 0), images(10, h, w, 1), images(9, h, w, 2)
    files = [tmp_path / f"t{i}.png" for i in range(len(train))]
    for f, im in zip(files, train):
        Image.fromarray(im).save(f)
    kp = np.random.default_rng(3).uniform(2, min(h, w) - 2, (10, 18, 2))
    pool, lp = CountingPool(), CountingLpips()
    nets = Nets(imagenet=pool, imagenet_info="pool", lpips=lp, lpips_info="lp")
    together = ProtocolSet(names, nets, files, batch_size=4)
    real_pass = pool.calls
    for s in range(0, 10, 4):
        together.add(real[s:s + 4], gen[s:s + 4], kp[s:s + 4])
    got = together.result()

    alone, alone_calls, alone_lpips = {}, 0, 0
    for name in names:
        p, q = CountingPool(), CountingLpips()
        one = Nets(imagenet=p, imagenet_info="pool", lpips=q, lpips_info="lp")
        rec = protocols.recipe(name)
        ref = reference_stats_for(files, [rec], p, "pool", None, read=read_rgb)[name]
        scorer = ProtocolScorer(rec, one, ref, batch_size=4)
        for s in range(0, 10, 4):
            scorer.add(real[s:s + 4], gen[s:s + 4], kp[s:s + 4])
        alone[name] = scorer.result()
        alone_calls += p.calls
        alone_lpips += q.calls
    for name in names:
        for key, value in alone[name].items():
            assert got[name][key] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, key)
    # Every protocol here sees the generated images alike for FID: one pass of 10 images,
    # and the real set once per distinct preparation (market: 1; fashion: padded and not).
    distinct_real = 1 if dataset == "market" else 2
    assert real_pass == 9 * distinct_real
    assert pool.calls - real_pass == 10 * (1 if dataset == "market" else 2)
    assert pool.calls < alone_calls and lp.calls < alone_lpips


@pytest.mark.parametrize("names, shape", [
    (["gfla-market", "dptn-market"], (128, 64)),
    (["gfla-fashion", "dptn-fashion", "pidm-fashion"], (256, 176)),
])
def test_the_2018_lpips_serves_the_protocols_that_score_the_images_as_they_are(names, shape):
    """evaluation passes the 2018 scorer's per-pair LPIPS (pipeline.metrics.lpips): protocols
    whose LPIPS images are unprepared take it and give the numbers they compute themselves;
    gfla-fashion pads, so it still runs the network."""
    from pipeline.metrics.lpips import lpips_distance

    real, gen = images(8, *shape, 0), images(8, *shape, 1)
    kp = np.random.default_rng(3).uniform(2, min(shape) - 2, (8, 18, 2))
    results, calls = [], []
    for give in (False, True):
        lp = CountingLpips()
        got = ProtocolSet(names, Nets(lpips=lp, lpips_info="lp"), None, batch_size=4)
        for s in range(0, 8, 4):
            given = lpips_distance(real[s:s + 4], gen[s:s + 4], CountingLpips(), batch_size=4) if give else None
            got.add(real[s:s + 4], gen[s:s + 4], kp[s:s + 4], lpips=given)
        results.append(got.result())
        calls.append(lp.calls)
    for name in names:
        assert results[1][name]["lpips"] == pytest.approx(results[0][name]["lpips"], rel=1e-12), name
    masked = 8 if "gfla-market" in names else 0  # mask-LPIPS is its own pass
    padded = 8 if "gfla-fashion" in names else 0
    assert calls == [masked + padded + 8, masked + padded]
