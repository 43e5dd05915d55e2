"""pipeline.infer.poses: the pose gallery (keypoint table or synthetic), skeleton pictures and
joint edits, and their round trip through repose's pose-file parsing."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.core.keypoints import J, make_table
from pipeline.datasets.market1501 import SPLIT_DIRS
from pipeline.infer.poses import (CANVAS_GREY, gallery_from_table, move_joint, pose_json,
                                  skeleton_picture, synthetic_gallery)
from pipeline.infer.repose import ReposeError, check_usable, parse_poses
from support.tiny_data import _BASE_POSE


def _table(tmp_path, n=6):
    names = [f"{k + 1:04d}_c1s1_{k:06d}_00.jpg" for k in range(n)]
    kp = np.repeat(_BASE_POSE[None], n, 0) + np.arange(n, dtype=np.float32)[:, None, None]
    kp[1, J["l_hip"]] = -1  # not usable: a hip is missing
    table = make_table(names, kp, split=["test"] * (n - 1) + ["train"], person_id=[k + 1 for k in range(n)],
                       width=64, height=128)
    path = tmp_path / "keypoints.parquet"
    table.to_parquet(path, index=False)
    return path, names


def test_gallery_from_table_keeps_usable_test_people(tmp_path):
    path, names = _table(tmp_path)
    g = gallery_from_table(path, tmp_path / "dataset", count=10)
    assert g.names == [n[:-4] for n in (names[0], names[2], names[3], names[4])]
    assert g.photos is None  # the images are not there
    np.testing.assert_allclose(g.keypoints[0], _BASE_POSE)
    assert g.frames.tolist() == [[64, 128]] * 4
    # At another resolution the pose scales with the frame.
    np.testing.assert_allclose(g.at(1, (256, 128)), (_BASE_POSE + 2) * 2)
    with pytest.raises(ReposeError, match="gallery pose 4 does not exist"):
        g.at(4, (128, 64))
    # Two spread over four, with the photos when the dataset is there.
    folder = tmp_path / "dataset" / SPLIT_DIRS["test"]
    folder.mkdir(parents=True)
    for n in names:
        cv2.imwrite(str(folder / n), np.zeros((128, 64, 3), np.uint8))
    two = gallery_from_table(path, tmp_path / "dataset", count=2)
    assert two.names == [names[0][:-4], names[4][:-4]]
    assert [p.name for p in two.photos] == [names[0], names[4]]


def test_synthetic_gallery_writes_its_photos(tmp_path):
    g = synthetic_gallery(tmp_path / "ex", count=3)
    assert len(g) == 3 and len(g.photos) == 3
    for photo, kp in zip(g.photos, g.keypoints):
        img = cv2.imread(str(photo))
        assert img.shape == (128, 64, 3)
        check_usable(kp, str(photo), "gallery")
    assert not np.allclose(g.keypoints[0], g.keypoints[1])
    again = synthetic_gallery(tmp_path / "again", count=3)
    np.testing.assert_array_equal(again.keypoints, g.keypoints)  # seeded: the same people


def test_skeleton_picture_draws_over_a_canvas_or_a_photo():
    kp = _BASE_POSE.copy()
    bare = skeleton_picture(kp, (128, 64), scale=2)
    assert bare.shape == (256, 128, 3) and bare.dtype == np.uint8
    assert (bare == CANVAS_GREY).all(-1).mean() > 0.8  # mostly background
    y, x = (np.rint((kp[J["neck"]] + 0.5) * 2 - 0.5)).astype(int)[::-1]
    assert (bare[y, x] == 255).all()  # joints are white dots
    photo = np.zeros((128, 64, 3), np.uint8)
    photo[..., 0] = 200  # red in RGB
    over = skeleton_picture(kp, (128, 64), scale=1, image=photo)
    assert over.shape == (128, 64, 3) and (over[0, 0] == (200, 0, 0)).all()  # RGB kept


def test_joint_edits_round_trip_through_the_pose_format():
    pose = pose_json(_BASE_POSE, (128, 64))
    assert pose["width"] == 64 and pose["height"] == 128
    # A click at picture pixel (20, 40) of a 3x picture is frame point ((20.5) / 3 - 0.5, ...).
    moved = move_joint(pose, "r_wrist", 20, 40, scale=3)
    assert moved["keypoints"][J["r_wrist"]] == [round(20.5 / 3 - 0.5, 1), round(40.5 / 3 - 0.5, 1)]
    assert pose["keypoints"][J["r_wrist"]] != moved["keypoints"][J["r_wrist"]]  # a copy
    clipped = move_joint(pose, "nose", -50, 10_000)
    assert clipped["keypoints"][J["nose"]] == [0.0, 127.0]
    ((name, kp),) = parse_poses(moved, "edit", 256, 128, "edited")
    assert name == "edited"
    np.testing.assert_allclose(kp[J["r_wrist"]], np.array(moved["keypoints"][J["r_wrist"]]) * 2, atol=1e-4)
    with pytest.raises(ReposeError, match="unknown joint 'tail'"):
        move_joint(pose, "tail", 1, 1)
