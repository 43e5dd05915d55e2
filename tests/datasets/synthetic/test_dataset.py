"""The offline synthetic person dataset: layout, names, annotations, determinism, geometry."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.core.config import SyntheticConfig
from pipeline.core.keypoints import J, keypoints_array, present, read_annotation_csv
from pipeline.datasets.market1501 import DISTRACTOR_ID, JUNK_ID, SPLIT_DIRS, check_layout, parse_name
from pipeline.datasets.synthetic import generate, make_identity, render_sample

H, W = 128, 64
CFG = SyntheticConfig(train_ids=3, test_ids=2, images_per_id=4)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synthetic")
    return out, generate(out, CFG, H, W, seed=7)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _annotations(root: Path, split: str) -> dict[str, np.ndarray]:
    names, kp = read_annotation_csv(root / "annotations" / f"market-annotation-{split}.csv")
    return dict(zip(names, kp))


def test_counts_names_and_layout(dataset):
    root, summary = dataset
    listing = {s: sorted(p.name for p in (root / d).glob("*.jpg")) for s, d in SPLIT_DIRS.items()}
    assert check_layout(root) == {s: len(v) for s, v in listing.items()}
    parsed = {s: [parse_name(n) for n in names] for s, names in listing.items()}
    train_ids = {pid for pid, _ in parsed["train"]}
    test_ids = {pid for pid, _ in parsed["test"]} - {JUNK_ID, DISTRACTOR_ID}
    assert train_ids == set(summary["train_ids"]) and len(train_ids) == CFG.train_ids
    assert test_ids == set(summary["test_ids"]) and len(test_ids) == CFG.test_ids
    assert not train_ids & test_ids
    assert len(listing["train"]) == summary["train"] == CFG.train_ids * CFG.images_per_id
    extras = [pid for pid, _ in parsed["test"] if pid in (JUNK_ID, DISTRACTOR_ID)]
    assert extras.count(JUNK_ID) == summary["junk"] >= 1
    assert extras.count(DISTRACTOR_ID) == summary["distractors"] >= 1
    assert len(listing["test"]) == summary["test"] == CFG.test_ids * CFG.images_per_id + len(extras)
    assert sorted(pid for pid, _ in parsed["query"]) == sorted(test_ids)
    assert not set(listing["query"]) & set(listing["test"])
    cams = [cam for names in parsed.values() for _, cam in names]
    assert set(cams) <= set(range(1, 7)) and len(set(cams)) >= 3
    img = cv2.imread(str(root / SPLIT_DIRS["train"] / listing["train"][0]))
    assert img.shape == (H, W, 3)


def test_annotations_cover_every_image_inside_the_crop(dataset):
    root, _ = dataset
    for split, folder in (("train", "bounding_box_train"), ("test", "bounding_box_test")):
        ann = _annotations(root, split)
        assert set(ann) == {p.name for p in (root / folder).glob("*.jpg")}
        kp = np.stack(list(ann.values()))
        vis = present(kp)
        assert ((kp[..., 0] <= W - 1) & (kp[..., 1] <= H - 1))[vis].all()
        assert (kp[~vis] == -1).all()
        people = np.array([parse_name(n)[0] > 0 for n in ann])
        torso = vis[:, [J["r_shoulder"], J["l_shoulder"], J["r_hip"], J["l_hip"]]].all(axis=1)
        assert torso[people].all()  # the pairs stage needs both shoulders and hips
        # Face points depend on the view: the nose is hidden in back views only.
        assert 0.2 < vis[people][:, J["nose"]].mean() < 1.0


def test_left_right_follow_openpose_semantics(dataset):
    root, _ = dataset
    kp = np.concatenate([np.stack(list(_annotations(root, s).values())) for s in ("train", "test")])
    vis = present(kp)
    rs, ls = kp[:, J["r_shoulder"], 0], kp[:, J["l_shoulder"], 0]
    front = vis[:, J["r_eye"]] & vis[:, J["l_eye"]]
    back = ~vis[:, J["nose"]] & vis[:, J["r_ear"]] & vis[:, J["l_ear"]] & vis[:, J["r_shoulder"]]
    assert front.sum() >= 3 and back.sum() >= 3
    assert (rs[front] < ls[front]).all()
    assert (rs[back] > ls[back]).all()


@pytest.mark.parametrize("view", ["front", "back", "right", "left"])
def test_views_set_sides_and_face_visibility(view):
    identity = make_identity(3, 5)
    for index in range(4):
        s = render_sample(3, identity, index, H, W, view=view)
        kp, vis = s.keypoints, present(s.keypoints)
        if view == "front":
            assert kp[J["r_shoulder"], 0] < kp[J["l_shoulder"], 0] and vis[J["r_eye"]] and vis[J["l_eye"]]
        if view == "back":
            assert kp[J["r_shoulder"], 0] > kp[J["l_shoulder"], 0]
            assert not vis[[J["nose"], J["r_eye"], J["l_eye"]]].any()
        if view == "right":  # the person's right side faces the camera
            assert vis[J["r_ear"]] and not vis[J["l_ear"]] and not vis[J["l_eye"]]
        if view == "left":
            assert vis[J["l_ear"]] and not vis[J["r_ear"]] and not vis[J["r_eye"]]


def test_person_is_drawn_where_the_keypoints_are():
    hits, total = 0, 0
    for pid in range(1, 7):
        identity = make_identity(11, pid)
        for index in range(3):
            s = render_sample(11, identity, index, H, W)
            xy = np.rint(s.keypoints[present(s.keypoints)]).astype(int)
            alpha = s.alpha[xy[:, 1], xy[:, 0]]
            diff = np.abs(s.image.astype(np.float32) - s.background)[xy[:, 1], xy[:, 0]].max(axis=1)
            assert (alpha > 0.5).all()
            hits += int((diff > 12).sum())
            total += len(xy)
    assert hits / total > 0.85  # a few joints may land on a colour close to the background


def test_annotations_are_in_the_canonical_crop_frame_at_any_render_size(dataset, tmp_path):
    """The files say 128x64 crop pixels (as Market-1501's; the import rescales them to the
    images' size): a half-size render of the same people has the same files, to 1 px."""
    root, _ = dataset
    generate(tmp_path, CFG, H // 2, W // 2, seed=7)
    for split in ("train", "test"):
        full, half = _annotations(root, split), _annotations(tmp_path, split)
        assert half.keys() == full.keys()
        a, b = np.stack(list(full.values())), np.stack([half[n] for n in full])
        assert (present(a) == present(b)).all()
        assert np.abs(a - b)[present(a)].max() <= 1


def test_same_seed_same_bytes_other_seed_differs(dataset, tmp_path):
    root, _ = dataset
    again = generate(tmp_path / "a", CFG, H, W, seed=7)
    assert _files(tmp_path / "a") == _files(root)
    assert again == dataset[1]
    generate(tmp_path / "b", CFG, H, W, seed=8)
    other = _files(tmp_path / "b")
    assert other.keys() != _files(root).keys() or other != _files(root)
    a = cv2.imread(str(next((tmp_path / "a" / "bounding_box_train").glob("0001_*.jpg"))))
    b = cv2.imread(str(next((tmp_path / "b" / "bounding_box_train").glob("0001_*.jpg"))))
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5


def test_images_do_not_depend_on_what_else_is_generated(dataset, tmp_path):
    root, _ = dataset
    generate(tmp_path, SyntheticConfig(train_ids=2, test_ids=0, images_per_id=2), H, W, seed=7)
    small = _files(tmp_path / "bounding_box_train")
    full = _files(root / "bounding_box_train")
    assert small and all(full[name] == data for name, data in small.items())


def test_identity_is_consistent_across_images():
    """Same person: same clothes in new poses. The person's mean colour varies less between
    images of one identity than between identities."""
    assert make_identity(0, 1) == make_identity(0, 1) != make_identity(0, 2)
    means, poses = [], set()
    for pid in range(1, 7):
        identity = make_identity(0, pid)
        row = []
        for index in range(4):
            s = render_sample(0, identity, index, H, W)
            row.append(s.image[s.alpha > 0.9].mean(axis=0))
            poses.add((s.pose.view, s.pose.kind, s.pose.yaw))
        means.append(row)
    m = np.asarray(means)                                   # [ids, images, 3]
    within = np.linalg.norm(m - m.mean(axis=1, keepdims=True), axis=-1).mean()
    between = np.linalg.norm(m.mean(axis=1)[:, None] - m.mean(axis=1)[None], axis=-1)
    assert len(poses) == 24                                 # every image a new pose
    assert within < 0.5 * between[~np.eye(len(m), dtype=bool)].mean()


def test_other_sizes_scale():
    identity = make_identity(0, 4)
    small = render_sample(0, identity, 2, 128, 64)
    big = render_sample(0, identity, 2, 256, 128)
    assert big.image.shape == (256, 128, 3)
    both = present(small.keypoints) & present(big.keypoints)
    assert both.sum() >= 14
    ratio = big.keypoints[both] / small.keypoints[both].clip(min=1)
    assert np.median(ratio) == pytest.approx(2.0, rel=0.05)


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="train_ids"):
        generate(tmp_path, SyntheticConfig(train_ids=0), H, W, seed=0)
    with pytest.raises(ValueError, match="seed"):
        generate(tmp_path, CFG, H, W, seed=-1)


def test_a_real_pose_detector_agrees_with_the_ground_truth(dataset, shared):
    """YOLO11n-pose (trained on real photos) finds the synthetic people, and its keypoints
    match the rendered ground truth: the people are plausible and the annotations right."""
    weights = shared("weights/yolo11n-pose.pt")
    from pipeline.data import pose  # lazy: imports ultralytics only for this test
    from pipeline.core.config import PoseConfig

    root, _ = dataset
    names, gt = read_annotation_csv(root / "annotations" / "market-annotation-train.csv")
    model = pose.load_model(str(weights), "cpu")
    table = pose.estimate([root / "bounding_box_train" / n for n in names], model,
                          PoseConfig(batch=16, imgsz=256), workers=1)
    pred = keypoints_array(table)[..., :2]
    assert table["detected"].mean() >= 0.9
    assert pose.pck(pred, gt, 0.5)[0] > 0.85
    assert pose.pck(pred, gt, 0.2)[0] > 0.7
