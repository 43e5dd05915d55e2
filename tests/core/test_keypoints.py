"""pipeline.core.keypoints: joint orders, COCO-17 -> OpenPose-18, the table, the canonical CSV."""
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.keypoints import (
    COCO17,
    CSV_HEADER,
    J,
    JOINTS,
    KP_COLUMNS,
    coco17_to_op18,
    format_annotation_csv,
    keypoints_array,
    make_table,
    present,
    read_annotation_csv,
    scale_keypoints,
)


def coco_pose(conf: float = 0.9) -> np.ndarray:
    """[17, 3] with a distinct x per COCO joint (x = 10 + index) and y = 100 + index."""
    idx = np.arange(17, dtype=np.float32)
    return np.stack([10 + idx, 100 + idx, np.full(17, conf, np.float32)], axis=1)


def test_orders_match_method_md():
    assert JOINTS[:8] == ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist",
                          "l_shoulder", "l_elbow", "l_wrist")
    assert JOINTS[14:] == ("r_eye", "l_eye", "r_ear", "l_ear")
    assert len(KP_COLUMNS) == 18 * 3 and KP_COLUMNS[:3] == ("nose_x", "nose_y", "nose_c")
    assert COCO17[5:7] == ("l_shoulder", "r_shoulder")


def test_coco_to_op18_keeps_left_and_right():
    op = coco17_to_op18(coco_pose())
    # COCO 5 (left shoulder) -> OP18 5, COCO 6 (right shoulder) -> OP18 2.
    assert op[5, 0] == 10 + 5 and op[2, 0] == 10 + 6
    # Every named joint lands on the COCO joint of the same name, side included.
    for name in JOINTS:
        if name != "neck":
            assert op[J[name], 0] == 10 + COCO17.index(name), name
    assert op[J["r_ankle"], 1] == 100 + COCO17.index("r_ankle")


def test_neck_is_shoulder_midpoint_only_with_both_shoulders():
    kp = coco_pose()
    op = coco17_to_op18(kp)
    np.testing.assert_allclose(op[J["neck"], :2], (kp[5, :2] + kp[6, :2]) / 2)
    kp[COCO17.index("r_shoulder"), 2] = 0.1  # below threshold
    op = coco17_to_op18(kp, min_conf=0.3)
    assert tuple(op[J["neck"]]) == (-1, -1, 0)
    assert tuple(op[J["r_shoulder"]]) == (-1, -1, 0)
    assert op[J["l_shoulder"], 2] == pytest.approx(0.9)


def test_missing_joints_are_minus_one_and_batched():
    kp = np.stack([coco_pose(), coco_pose(0.0)])  # [2, 17, 3]
    op = coco17_to_op18(kp, min_conf=0.5)
    assert op.shape == (2, 18, 3)
    assert present(op[0]).all()
    assert (op[1] == np.array([-1, -1, 0])).all()


def test_table_round_trip_and_scaling():
    kp = np.full((2, 18, 2), -1.0, np.float32)
    kp[0, J["nose"]] = (32, 10)
    kp[1, J["l_ankle"]] = (0, 127)
    table = make_table(["a.jpg", "b.jpg"], kp, split="train", width=64, height=128)
    arr = keypoints_array(table)
    assert arr.shape == (2, 18, 3)
    assert arr[0, J["nose"]].tolist() == [32, 10, 1] and arr[0, J["neck"]].tolist() == [-1, -1, 0]
    assert table["detected"].tolist() == [True, True]
    wh = table[["width", "height"]].to_numpy()
    np.testing.assert_allclose(scale_keypoints(arr, wh, (128, 64)), arr[..., :2])  # same size
    half = scale_keypoints(arr, wh, (64, 32))
    assert half[0, J["nose"]].tolist() == pytest.approx([16, 5], abs=0.5)
    assert half[0, J["neck"]].tolist() == [-1, -1]


def test_csv_parse_and_format(tmp_path: Path):
    text = (
        f"{CSV_HEADER}\n"
        "0001_c1s1_000001_00.jpg: "
        "[8, 23, -1, 43, 60, 23, 43, 60, 64, 92, 118, 65, 89, 108, 5, 6, 7, 8]"
        ": [39, 37, -1, 12, 8, 53, 59, 53, 22, 24, 24, 43, 43, 45, 36, 42, 31, 0]\n"
    )
    path = tmp_path / "a.csv"
    path.write_text(text)
    names, kp = read_annotation_csv(path)
    assert names == ["0001_c1s1_000001_00.jpg"]
    assert kp.shape == (1, 18, 2)
    assert kp[0, J["nose"]].tolist() == [39, 8]  # (x, y): the file stores y first
    assert kp[0, J["r_shoulder"]].tolist() == [-1, -1]
    assert kp[0, J["l_ear"]].tolist() == [0, 8]  # column 0 is a present joint
    assert format_annotation_csv(names, kp) == text


@pytest.mark.parametrize(
    "line, problem",
    [
        ("x.jpg: [1, 2]: [3, 4]", "expected 18"),
        ("x.jpg [1]: [2]", "malformed"),
        ("x.jpg: [a" + ", 1" * 17 + "]: [" + ", ".join(["1"] * 18) + "]", "malformed"),
    ],
)
def test_csv_malformed_line_names_file_and_line(tmp_path: Path, line: str, problem: str):
    good = "y.jpg: [" + ", ".join(["1"] * 18) + "]: [" + ", ".join(["2"] * 18) + "]"
    path = tmp_path / "bad.csv"
    path.write_text(f"{CSV_HEADER}\n{good}\n{line}\n")
    with pytest.raises(ValueError, match=rf"bad\.csv:3: .*{problem}"):
        read_annotation_csv(path)


def test_csv_bad_header(tmp_path: Path):
    path = tmp_path / "h.csv"
    path.write_text("name,x,y\n")
    with pytest.raises(ValueError, match="h.csv: expected header"):
        read_annotation_csv(path)


def test_empty_table_keeps_columns():
    table = make_table([], np.zeros((0, 18, 3)))
    assert len(table) == 0 and list(table.columns[-54:]) == list(KP_COLUMNS)
    assert keypoints_array(table).shape == (0, 18, 3)
