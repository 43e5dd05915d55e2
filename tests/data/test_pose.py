"""pipeline.data.pose (YOLO pose -> keypoint table) and the `pose` stage, on real crops and weights."""
import os
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path

from pipeline.core.config import PoseConfig
from pipeline.core.keypoints import COCO17, J, keypoints_array, present, read_annotation_csv
from pipeline.data.pose import (
    body_scale,
    decode_image,
    estimate,
    load_model,
    main_person_index,
    pck,
    read_table_metadata,
    resolve_weights,
    scan_folder,
    to_op18,
)
from stages import pose as pose_stage

WEIGHTS = "weights/yolo11n-pose.pt"
SAMPLE = "data/market1501-sample"
TRAIN_CSV = "data/market1501-annotations/market-annotation-train.csv"
SHA = "869e83fcdffdc7371fa4e34cd8e51c838cc729571d1635e5141e3075e9319dc0"
CFG = PoseConfig(backend="yolo", imgsz=192, conf=0.1, kpt_conf=0.3, batch=8, device="cpu")


@pytest.fixture(scope="module")
def model():
    return load_model(str(shared_path(WEIGHTS)), "cpu")


@pytest.fixture(scope="module")
def crops() -> list[Path]:
    return sorted(shared_path(SAMPLE).glob("*.jpg"))


def copy_crops(crops: list[Path], folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, folder / p.name)) for p in crops[:n]]


def add_bad_files(folder: Path, good: Path) -> tuple[Path, Path]:
    data = good.read_bytes()
    truncated = folder / "0001_c1s1_000001_01.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    text = folder / "0001_c1s1_000002_01.jpg"
    text.write_text("this is not an image\n")
    return truncated, text


# --------------------------------------------------------------------------- pure parts


def test_main_person_prefers_large_central_box():
    boxes = np.array([[0, 0, 10, 20], [4, 8, 60, 124], [40, 100, 64, 128]], np.float32)
    conf = np.array([0.95, 0.6, 0.9], np.float32)
    assert main_person_index(boxes, conf, 64, 128) == 1
    assert main_person_index(np.zeros((0, 4)), np.zeros(0), 64, 128) == -1


def test_to_op18_drops_joints_outside_the_image_and_clips():
    coco = np.zeros((1, 17, 3), np.float32)
    coco[0, :, :2] = (30, 60)
    coco[0, :, 2] = 0.9
    coco[0, COCO17.index("r_ankle")] = (30, 140, 0.9)  # below a 128-high crop
    coco[0, COCO17.index("l_shoulder")] = (-3, 20, 0.9)  # left of the crop
    coco[0, COCO17.index("l_wrist")] = (63.3, 10, 0.9)  # inside, rounds past the edge
    coco[0, COCO17.index("nose"), 2] = 0.1  # under kpt_conf
    kp = to_op18(coco, np.array([[64, 128]]), kpt_conf=0.3)
    for joint in ("r_ankle", "l_shoulder", "neck", "nose"):  # neck needs both shoulders
        assert kp[0, J[joint]].tolist() == [-1, -1, 0], joint
    assert kp[0, J["l_wrist"], :2].tolist() == [63, 10]
    assert kp[0, J["r_hip"], :2].tolist() == [30, 60]


def test_body_scale_and_pck():
    ref = np.full((1, 18, 2), -1.0, np.float32)
    for name, xy in {"r_shoulder": (20, 20), "l_shoulder": (40, 20), "r_hip": (20, 60),
                     "l_hip": (40, 60), "nose": (30, 10)}.items():
        ref[0, J[name]] = xy
    assert body_scale(ref)[0] == pytest.approx(40.0)
    pred = ref.copy()
    pred[0, J["nose"]] += (0, 15)  # 15 px off: within 0.5 * 40, not within 0.2 * 40
    pred[0, J["l_hip"]] = -1  # missing in the prediction: not compared
    assert pck(pred, ref, 0.5) == (1.0, 4)
    assert pck(pred, ref, 0.2) == (0.75, 4)
    assert np.isnan(body_scale(pred)[0])


def test_decode_errors_name_the_problem(tmp_path: Path, crops: list[Path]):
    truncated, text = add_bad_files(tmp_path, crops[0])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    image, err = decode_image(crops[0])
    assert err is None and image.shape == (128, 64, 3) and image.dtype == np.uint8
    assert "truncated JPEG" in decode_image(truncated)[1]
    assert "not a decodable image" in decode_image(text)[1]
    assert "empty file" in decode_image(empty)[1]
    assert "file not found" in decode_image(tmp_path / "gone.jpg")[1]


def test_offline_bare_weights_name_fails_with_a_hint(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="offline.*local path"):
        resolve_weights("surely-not-cached-pose.pt")
    with pytest.raises(FileNotFoundError, match="file not found"):
        resolve_weights(str(tmp_path / "missing" / "w.pt"))


def test_scan_folder_parses_market_names(tmp_path: Path):
    (tmp_path / "bounding_box_train").mkdir()
    (tmp_path / "bounding_box_train" / "0002_c3s1_000451_03.jpg").write_bytes(b"x")
    (tmp_path / "holiday.PNG").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not listed")
    man = scan_folder(tmp_path)
    assert man["path"].tolist() == ["bounding_box_train/0002_c3s1_000451_03.jpg", "holiday.PNG"]
    assert man["person_id"].tolist() == [2, -1]
    assert man["camera"].tolist() == [3, 0]
    assert man["split"].tolist() == ["train", ""]


# --------------------------------------------------------------------------- the real model


def test_model_provenance(model):
    assert model.label == f"yolo11n-pose.pt@sha256:{SHA}"
    assert model.device == "cpu" and not model.half


def test_yolo_matches_canonical_openpose_on_real_crops(model, crops):
    names, ref_all = read_annotation_csv(shared_path(TRAIN_CSV))
    row = {n: i for i, n in enumerate(names)}
    ref = ref_all[[row[p.name] for p in crops]]
    table = estimate(crops, model, CFG)
    assert table["name"].tolist() == [p.name for p in crops]
    assert table["detected"].all() and table["error"].isna().all()
    assert (table["width"] == 64).all() and (table["height"] == 128).all()
    pred = keypoints_array(table)
    # Only confidences at or above kpt_conf survive; missing joints are exactly -1.
    ok = present(pred)
    assert (pred[ok][:, 2] >= CFG.kpt_conf).all() and (pred[~ok] == [-1, -1, 0]).all()
    pck50, n = pck(pred, ref, 0.5)
    pck20, _ = pck(pred, ref, 0.2)
    recall = (ok & present(ref)).sum() / present(ref).sum()
    print(f"\nYOLO11n-pose vs canonical OpenPose on {len(crops)} real crops, imgsz {CFG.imgsz}: "
          f"PCK@0.5 {pck50:.3f}, PCK@0.2 {pck20:.3f} over {n} joints, joint recall {recall:.3f}")
    # Measured 0.987 / 0.938 / 0.990 with these settings; floors leave a margin.
    assert pck50 >= 0.9
    assert pck20 >= 0.8
    assert recall >= 0.9


def test_unreadable_images_are_recorded_and_the_rest_run(tmp_path: Path, model, crops):
    good = copy_crops(crops, tmp_path, 3)
    truncated, text = add_bad_files(tmp_path, crops[0])
    paths = [good[0], truncated, good[1], text, good[2]]
    table = estimate(paths, model, CFG, split="train", person_id=[1, 2, 3, 4, 5])
    assert table["detected"].tolist() == [True, False, True, False, True]
    errors = table["error"].tolist()
    assert pd.isna(errors[0]) and pd.isna(errors[2]) and pd.isna(errors[4])
    assert "truncated JPEG" in errors[1] and truncated.name in errors[1]
    assert "not a decodable image" in errors[3]
    assert table["person_id"].tolist() == [1, 2, 3, 4, 5]
    assert (keypoints_array(table)[[1, 3], :, :2] == -1).all()
    assert table.loc[[1, 3], "score"].tolist() == [0.0, 0.0]
    # Batching does not change results: the good rows match a run without the bad files.
    alone = estimate(good, model, CFG)
    np.testing.assert_allclose(keypoints_array(table)[[0, 2, 4]], keypoints_array(alone), atol=1e-3)


# --------------------------------------------------------------------------- the stage


def test_stage_standalone_on_a_folder(tmp_path: Path, crops, monkeypatch):
    images = tmp_path / "imgs"
    copy_crops(crops, images, 4)
    add_bad_files(images, crops[0])
    monkeypatch.chdir(tmp_path)  # no params.yaml here: defaults
    out, csv, summary = tmp_path / "kp.parquet", tmp_path / "kp.csv", tmp_path / "pose.json"
    code = pose_stage.main(["--images", str(images), "--out", str(out), "--csv", str(csv),
                            "--summary", str(summary), "--weights", str(shared_path(WEIGHTS))])
    assert code == 0
    table = pd.read_parquet(out)
    assert len(table) == 6 and table["detected"].sum() == 4
    assert table["person_id"].tolist()[:2] == [1, 1]  # the two bad files, parsed Market names
    assert set(table["model"]) == {f"yolo11n-pose.pt@sha256:{SHA}"}
    meta = read_table_metadata(out)
    assert meta["backend"] == "yolo" and meta["imgsz"] == PoseConfig().imgsz
    assert json.loads(summary.read_text()) == {
        "images": 6, "detected": 4, "failed": 2, "no_annotation": 0, "backend": "yolo",
    }
    lines = csv.read_text().splitlines()
    assert lines[0] == "name:keypoints_y:keypoints_x" and len(lines) == 7
    names, kp = read_annotation_csv(csv)
    np.testing.assert_array_equal(kp, np.rint(keypoints_array(table)[..., :2]))


def test_stage_annotations_backend_with_manifest(tmp_path: Path):
    src = shared_path(TRAIN_CSV)
    crops = sorted(shared_path(SAMPLE).glob("*.jpg"))[:3]  # real crops, each annotated in src
    dataset = tmp_path / "dataset"
    (dataset / "bounding_box_train").mkdir(parents=True)
    for crop in crops:
        (dataset / "bounding_box_train" / crop.name).write_bytes(crop.read_bytes())
    truncated = dataset / "bounding_box_train" / crops[2].name
    truncated.write_bytes(crops[2].read_bytes()[: truncated.stat().st_size // 2])
    (dataset / "x.jpg").write_bytes(crops[0].read_bytes())  # readable, not annotated
    names = [c.name for c in crops]
    manifest = pd.DataFrame({
        "name": names + ["0001_c1s1_000001_01.jpg"],
        "path": [f"bounding_box_train/{n}" for n in names] + ["x.jpg"],
        "person_id": [int(n[:4]) for n in names] + [1],
        "camera": [1, 1, 1, 1],
        "split": ["train"] * 4,
        "width": [64] * 4,
        "height": [128] * 4,
    })
    man_file = tmp_path / "manifest.parquet"
    manifest.to_parquet(man_file)
    params = tmp_path / "params.yaml"
    params.write_text("pose:\n  backend: annotations\n  annotations: [%s]\n" % src)
    out, summary = tmp_path / "kp.parquet", tmp_path / "m" / "pose.json"
    argv = ["--params", str(params), "--manifest", str(man_file), "--dataset", str(dataset),
            "--out", str(out), "--summary", str(summary)]
    assert pose_stage.main(argv) == 0
    table = pd.read_parquet(out)
    assert table["name"].tolist() == manifest["name"].tolist()
    # The truncated JPEG is recorded with its name and skipped: no keypoints, so no pair uses it.
    assert table["detected"].tolist() == [True, True, False, False]
    assert str(truncated) in table["error"][2] and "truncated JPEG" in table["error"][2]
    assert (keypoints_array(table.iloc[[2]])[..., :2] == -1).all()
    assert table["error"].tolist()[3] == "no annotation"
    result = json.loads(summary.read_text())
    assert result["images"] == 4 and result["failed"] == 1 and result["no_annotation"] == 1
    assert result["backend"] == "annotations"
    assert read_table_metadata(out)["model"].startswith("market-annotation-train.csv@sha256:")
    # A rerun on the same inputs writes the same bytes (no timings in the file).
    first = out.read_bytes()
    assert pose_stage.main(argv) == 0
    assert out.read_bytes() == first


def test_stage_reports_bad_inputs_clearly(tmp_path: Path, capsys):
    code = pose_stage.main(["--params", str(tmp_path / "none.yaml")])
    assert code == 2
    assert "none.yaml" in capsys.readouterr().err


class _Payload:
    """Unpickling this runs a shell command: what a crafted weights file does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_as_pose_weights_never_runs(tmp_path: Path, monkeypatch):
    """A weights file carrying a pickle payload is refused by name before anything
    unpickles it, whether given as a path or found by its official name in the working
    directory (a local file wins); the payload's marker file is never created."""
    import torch

    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker)}, evil)
    with pytest.raises(ValueError, match=r"evil\.pt: refused as pose weights"):
        load_model(str(evil), "cpu")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "yolo11n-pose.pt").write_bytes(evil.read_bytes())
    with pytest.raises(ValueError, match="refused as pose weights"):
        load_model("yolo11n-pose.pt", "cpu")
    assert not marker.exists()


def test_official_weights_pass_the_safe_load(model):
    assert model.yolo.task == "pose" and len(model.sha256) == 64


def test_predict_leaves_torch_threads_as_they_were(model, crops):
    """ultralytics' device set-up (the first predict) sets torch to cpu_count - 1 threads;
    pose.predict restores the caller's count, so evaluate's generation and Inception keep
    every core."""
    import cv2
    import torch

    from pipeline.data.pose import predict

    before = torch.get_num_threads()
    fresh = load_model(str(shared_path(WEIGHTS)), "cpu")  # not set up yet: its first predict
    try:
        torch.set_num_threads(3)
        results = predict(fresh, [cv2.imread(str(crops[0]))], verbose=False, device="cpu")
        assert len(results) == 1 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
