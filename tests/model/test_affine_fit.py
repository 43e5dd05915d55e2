"""The batched affine fits against scikit-image's estimate_transform('affine') and a NumPy
transcription of scikit-image 0.13's normalised DLT (the version the original pinned)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.transform import estimate_transform

from pipeline.core.keypoints import J
from pipeline.model.affine_fit import fit_affine_dlt, fit_affine_lstsq
from pipeline.model.geometry import PART_NAMES, part_geometry

pytestmark = pytest.mark.usefixtures("one_thread")


def dlt_013(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """scikit-image 0.13 AffineTransform.estimate, written out: centre each set and scale its
    RMS distance to sqrt(2), smallest right singular vector of [x y 1 0 0 0 X; 0 0 0 x y 1 Y],
    then undo the normalisation. Returns the 2 x 3 affine src -> dst."""
    def normalise(pts):
        centre = pts.mean(0)
        factor = np.sqrt(2) / np.sqrt(((pts - centre) ** 2).sum() / len(pts))
        return np.array([[factor, 0, -factor * centre[0]], [0, factor, -factor * centre[1]],
                         [0, 0, 1]]), (pts - centre) * factor
    t_src, s = normalise(src)
    t_dst, d = normalise(dst)
    n = len(s)
    a = np.zeros((2 * n, 7))
    a[:n, 0:2], a[:n, 2], a[:n, 6] = s, 1, d[:, 0]
    a[n:, 3:5], a[n:, 5], a[n:, 6] = s, 1, d[:, 1]
    v = np.linalg.svd(a)[2][-1]
    h = np.vstack([(-v[:6] / v[6]).reshape(2, 3), [0, 0, 1]])
    return (np.linalg.inv(t_dst) @ h @ t_src)[:2]


def max_error_over_box(a: np.ndarray, b: np.ndarray, lo, hi) -> float:
    """Largest |a(p) - b(p)| (px) over the box [lo, hi]: at one of its corners."""
    corners = np.array([[lo[0], lo[1], 1], [lo[0], hi[1], 1], [hi[0], lo[1], 1], [hi[0], hi[1], 1]])
    return float(np.abs(corners @ (a - b).T).max())


def random_sets(count: int, seed: int = 0):
    """Point sets of 3..8 points, a third of them nearly collinear, with noisy affine images."""
    rng = np.random.default_rng(seed)
    sets = []
    for i in range(count):
        n = int(rng.integers(3, 9))
        tgt = rng.uniform(0, 128, (n, 2))
        if i % 3 == 0:
            axis = rng.normal(size=2)
            axis /= np.linalg.norm(axis)
            tgt = tgt[:1] + np.outer(rng.uniform(-40, 40, n), axis) \
                + rng.normal(0, rng.choice([0.5, 2.0, 5.0]), (n, 2))
        lin = rng.normal(size=(2, 2)) * 0.5 + np.eye(2)
        src = tgt @ lin.T + rng.uniform(-20, 20, 2) + rng.normal(0, rng.choice([0, 1, 5, 15]),
                                                                 (n, 2))
        sets.append((tgt, src))
    return sets


def test_installed_skimage_equals_the_013_transcription():
    for tgt, src in random_sets(60, seed=1):
        ref = estimate_transform("affine", src=tgt, dst=src).params[:2]
        lo, hi = tgt.min(0), tgt.max(0)
        assert max_error_over_box(dlt_013(tgt, src), ref, lo, hi) < 1e-8


def test_dlt_matches_skimage_on_random_sets_batched():
    sets = random_sets(600)
    tgt = torch.zeros(len(sets), 8, 2, dtype=torch.float64)
    src, weight = torch.zeros_like(tgt), torch.zeros(len(sets), 8)
    for i, (t, s) in enumerate(sets):
        # Scatter the present points among padding rows: absent rows must not matter.
        rows = np.sort(np.random.default_rng(i).choice(8, len(t), replace=False))
        tgt[i, rows], src[i, rows], weight[i, rows] = torch.from_numpy(t), torch.from_numpy(s), 1
        tgt[i, [r for r in range(8) if r not in rows]] = -1.0  # as missing joints are
    fitted, ok = fit_affine_dlt(tgt, src, weight)  # all 600 fits in one call
    assert fitted.shape == (600, 2, 3) and ok.float().mean() > 0.8
    worst = 0.0
    for i, (t, s) in enumerate(sets):
        if not ok[i]:
            continue
        ref = estimate_transform("affine", src=t, dst=s).params[:2]
        worst = max(worst, max_error_over_box(fitted[i].numpy(), ref, t.min(0), t.max(0)))
    assert worst < 1e-3


def test_dlt_is_not_least_squares_but_agrees_on_three_points():
    rng = np.random.default_rng(2)
    t = torch.from_numpy(rng.uniform(0, 100, (2, 6, 2)))
    s = t @ torch.tensor([[1.1, 0.2], [-0.1, 0.9]], dtype=torch.float64).T \
        + torch.from_numpy(rng.normal(0, 4, (2, 6, 2)))
    w = torch.ones(2, 6)
    w[1, 3:] = 0  # the second fit: exactly three points, both fits exact
    dlt, ok_d = fit_affine_dlt(t, s, w)
    lsq, ok_l = fit_affine_lstsq(t, s, w)
    assert ok_d.all() and ok_l.all()
    torch.testing.assert_close(dlt[1], lsq[1], atol=1e-6, rtol=0)
    assert (dlt[0] - lsq[0]).abs().max() > 1e-3  # six noisy points: different estimators
    ref = estimate_transform("affine", src=t[0].numpy(), dst=s[0].numpy()).params[:2]
    np.testing.assert_allclose(dlt[0].numpy(), ref, atol=1e-6)


def test_singular_and_underdetermined_fits_are_missing():
    line = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], dtype=torch.float64)
    good = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [7.0, 3.0]], dtype=torch.float64)
    tgt = torch.stack([line, good, good, good])
    src = torch.stack([good, line, good, good])
    weight = torch.ones(4, 4)
    weight[3, 2:] = 0  # two points only
    fitted, ok = fit_affine_dlt(tgt, src, weight)
    assert ok.tolist() == [False, False, True, False]
    eye = torch.eye(2, 3, dtype=torch.float64)
    torch.testing.assert_close(fitted[[0, 1, 3]], eye.expand(3, 2, 3))
    torch.testing.assert_close(fitted[2], eye, atol=1e-6, rtol=0)


def test_float32_input_gives_float32_output():
    t = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [7.0, 3.0]])
    fitted, ok = fit_affine_dlt(t, t * 2 + 1, torch.ones(4))
    assert ok and fitted.dtype == torch.float32
    torch.testing.assert_close(fitted, torch.tensor([[2.0, 0, 1], [0, 2.0, 1]]))


def _original_point_sets(src: np.ndarray, tgt: np.ndarray):
    """The original's fit inputs for one pair (pose_transform.affine_transforms): (part,
    target points, source points) for the torso, the head and the limbs, (x, y)."""
    def polygon(fr, to, st, inc_to):
        fr = fr + (fr - to) * 0.1
        to = to + (to - fr) * inc_to
        d = fr - to
        nv = np.array([-d[1], d[0]])
        nv = nv / np.linalg.norm(nv)
        return np.array([fr + st * 0.2 * nv, fr - st * 0.2 * nv, to - st * 0.2 * nv,
                         to + st * 0.2 * nv])

    def scale(kp):
        return np.sqrt((np.sum((kp[J["r_hip"]] - kp[J["r_shoulder"]]) ** 2)
                        + np.sum((kp[J["l_hip"]] - kp[J["l_shoulder"]]) ** 2)) / 2.0)

    have_s, have_t = (src >= 0).all(1), (tgt >= 0).all(1)
    torso = [J[n] for n in ("r_hip", "l_hip", "l_shoulder", "r_shoulder")]
    if not (have_s[torso].all() and have_t[torso].all()):
        return []
    out = [("torso", tgt[torso], src[torso])]
    head = [J[n] for n in ("nose", "r_eye", "l_eye", "r_ear", "l_ear") if have_s[J[n]] and have_t[J[n]]]
    if head:
        pts = head + [J["l_shoulder"], J["r_shoulder"]]
        out.append(("head", tgt[pts], src[pts]))
    limbs = [("r_thigh", "r_hip", "r_knee", 0.1, "l"), ("l_thigh", "l_hip", "l_knee", 0.1, "r"),
             ("r_shin", "r_knee", "r_ankle", 0.3, "l"), ("l_shin", "l_knee", "l_ankle", 0.3, "r"),
             ("r_upper_arm", "r_shoulder", "r_elbow", 0.1, "l"),
             ("l_upper_arm", "l_shoulder", "l_elbow", 0.1, "r"),
             ("r_forearm", "r_elbow", "r_wrist", 0.3, "l"), ("l_forearm", "l_elbow", "l_wrist", 0.3, "r")]
    st_s, st_t = scale(src), scale(tgt)
    for part, a, b, inc, twin in limbs:
        if not (have_t[J[a]] and have_t[J[b]]) or (tgt[J[a]] == tgt[J[b]]).all():
            continue
        sa, sb = a, b
        if not (have_s[J[a]] and have_s[J[b]]):  # the source borrows the mirrored limb
            sa, sb = twin + a[1:], twin + b[1:]
            if not (have_s[J[sa]] and have_s[J[sb]]):
                continue
        if (src[J[sa]] == src[J[sb]]).all():
            continue
        out.append((part, polygon(tgt[J[a]], tgt[J[b]], st_t, inc),
                    polygon(src[J[sa]], src[J[sb]], st_s, inc)))
    return out


def test_part_affines_match_skimage_on_500_canonical_pairs(shared):
    """The original's head / torso / limb fits on real test pairs, to 1e-3 px over the part
    (its mask's bounding box), all parts of all pairs in one batched call."""
    from pipeline.core.keypoints import read_annotation_csv

    names, kp = read_annotation_csv(shared("data/market1501-annotations/market-annotation-test.csv"))
    lines = shared("data/market1501-annotations/market-pairs-test.csv").read_text().splitlines()
    index = {n: i for i, n in enumerate(names)}
    rows = [line.split(",") for line in lines[1:501]]
    src = torch.from_numpy(kp[[index[a] for a, _ in rows]]).float()
    tgt = torch.from_numpy(kp[[index[b] for _, b in rows]]).float()
    geo = part_geometry(src, tgt, 128, 64, affine_fit="dlt", part_masks="original")
    checked = {name: 0 for name in PART_NAMES}
    worst = 0.0
    for i in range(len(rows)):
        for part, t, s in _original_point_sets(src[i].double().numpy(), tgt[i].double().numpy()):
            k = PART_NAMES.index(part)
            ref = estimate_transform("affine", src=t, dst=s).params[:2]
            assert geo.valid[i, k], (i, part)
            mask = geo.masks[i, k]
            ys, xs = torch.nonzero(mask, as_tuple=True)
            if len(xs) == 0:
                continue
            lo, hi = (int(xs.min()), int(ys.min())), (int(xs.max()), int(ys.max()))
            err = max_error_over_box(geo.affines[i, k].double().numpy(), ref, lo, hi)
            worst = max(worst, err)
            checked[part] += 1
    assert worst < 1e-3, worst
    assert checked["torso"] > 400 and checked["head"] > 300 and min(checked.values()) > 100
