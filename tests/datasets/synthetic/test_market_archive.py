"""pipeline.datasets.synthetic.market_archive: the Market-1501-shaped archive generator."""
from __future__ import annotations

import zipfile
from dataclasses import replace

import numpy as np
import pytest
from conftest import shared_path

from pipeline.datasets import market1501 as market
from pipeline.core.keypoints import J
from pipeline.datasets.synthetic import market_archive as ma
from pipeline.datasets.synthetic.render import render_person

ANN = "data/market1501-annotations"


@pytest.fixture(scope="module")
def canonical():
    return ma.read_canonical(shared_path(ANN))


def _split(items, split):
    return [it.arcname.rsplit("/", 1)[1] for it in items if it.split == split]


def test_full_plan_has_the_real_names_and_counts(canonical):
    items = ma.plan(canonical)
    train, test, query = (_split(items, s) for s in ("train", "test", "query"))
    assert (len(train), len(test), len(query)) == (12936, 19732, 3368)
    assert sorted(train) == sorted(canonical["train"][0])
    assert sorted(test) == sorted(canonical["test"][0])  # junk, distractors, 18 `.jpg.jpg`
    assert sum(n.endswith(".jpg.jpg") for n in test) == 18
    ids = {market.parse_name(n)[0] for n in test}
    assert {market.JUNK_ID, market.DISTRACTOR_ID} <= ids
    # Query: Market-pattern `_00` hand-drawn boxes of the gallery's real ids, no clashes.
    assert len(set(query)) == 3368 and all(market.is_market_name(n) for n in query)
    assert all(n.endswith("_00.jpg") for n in query)
    qids = {market.parse_name(n)[0] for n in query}
    assert qids <= ids - {market.JUNK_ID, market.DISTRACTOR_ID} and len(qids) >= 700
    assert not set(query) & set(test)
    assert {it.arcname.split("/")[0] for it in items} == {ma.ROOT_DIR}
    assert items == sorted(items, key=lambda it: it.arcname)


def test_strip_gives_single_jpg_names(canonical):
    test = _split(ma.plan(canonical, double_jpg="strip"), "test")
    assert not any(n.endswith(".jpg.jpg") for n in test) and len(set(test)) == 19732
    with pytest.raises(ValueError, match="double_jpg"):
        ma.plan(canonical, double_jpg="x")


def test_subset_keeps_whole_ids_in_every_split(canonical):
    items = ma.plan(canonical, fraction=0.05)
    ids = {s: {market.parse_name(n)[0] for n in _split(items, s)} - {-1, 0}
           for s in ("train", "test", "query")}
    assert 0.02 * 751 < len(ids["train"]) < 0.1 * 751
    assert ids["query"] <= ids["test"]
    with pytest.raises(ValueError, match="fraction"):
        ma.plan(canonical, fraction=0)


def test_archive_is_deterministic_and_extractable(canonical, tmp_path):
    items = ma.plan(canonical, fraction=0.004)
    a = ma.write_archive(tmp_path / "a.zip", items, workers=1)
    ma.write_archive(tmp_path / "b.zip", items, workers=2, chunk=7)
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    assert a["images"] == len(items) and a["images_per_s"] > 0
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        names = zf.namelist()
        assert f"{ma.ROOT_DIR}/readme.txt" in names
        assert {f"{ma.ROOT_DIR}/{d}/" for d in market.SPLIT_DIRS.values()} <= set(names)
        zf.extractall(tmp_path / "x")
    counts = market.check_layout(market.find_root(tmp_path / "x"))
    assert sum(counts.values()) == len(items)


def test_subset_files_match_the_archive(canonical, tmp_path):
    items = ma.plan(canonical, fraction=0.02)
    ma.write_subset_files(tmp_path, canonical, items, shared_path(f"{ANN}/market-pairs-test.csv"))
    kept = {market.canonical_name(it.arcname.rsplit("/", 1)[1]) for it in items}
    sub = ma.read_canonical(tmp_path)
    assert len(sub["train"][0]) == len(_split(items, "train"))
    assert {market.canonical_name(n) for n in sub["test"][0]} <= kept
    pairs = (tmp_path / ma.PAIRS_FILE).read_text().splitlines()
    assert pairs[0] == "from,to" and len(pairs) > 1
    assert all(market.canonical_name(n) in kept for row in pairs[1:] for n in row.split(","))


def test_people_are_drawn_at_their_canonical_keypoints(canonical):
    """The fitted pose puts the drawn limb joints near the annotation (median a few px)."""
    names, kp = canonical["train"]
    errors = []
    for i in range(0, 600, 6):
        pid = market.parse_name(names[i])[0]
        ident = ma._identity(0, pid)
        fitted = ma.fit_pose(kp[i], ident.shape, np.random.default_rng(i))
        if fitted is None:
            continue
        pose, scale, shape = fitted
        layer = render_person(replace(ident, shape=shape), pose, 128, 64,
                              placement=ma.placement_for(kp[i], shape, pose, scale))
        limbs = [J[n] for n in ("neck", "r_shoulder", "l_shoulder", "r_elbow", "l_elbow", "r_wrist",
                                "l_wrist", "r_hip", "l_hip", "r_knee", "l_knee")]
        ok = (kp[i, limbs] >= 0).all(1) & (layer.keypoints[limbs] >= 0).all(1)
        errors.extend(np.linalg.norm(layer.keypoints[limbs] - kp[i, limbs], axis=1)[ok])
    assert len(errors) > 500
    assert np.median(errors) < 4.0 and np.percentile(errors, 90) < 9.0


def test_render_item_kinds(canonical):
    items = ma.plan(canonical, fraction=0.004)
    for split in ("train", "test", "query"):
        item = next(it for it in items if it.split == split)
        img = ma.render_item(item, 0)
        assert img.shape == (128, 64, 3) and img.dtype == np.uint8 and img.std() > 5
        np.testing.assert_array_equal(img, ma.render_item(item, 0))
