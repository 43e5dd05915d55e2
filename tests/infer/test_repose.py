"""pipeline.infer.repose end to end on real Market-1501 photos with the real YOLO pose weights and
a tiny randomly initialised generator."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import shared_path
from pipeline.model.checkpoint import save_generator
from pipeline.core.config import ImageConfig, ModelConfig
from pipeline.core.keypoints import J, write_annotation_csv
from pipeline.model.generator import Generator
from stages.repose import main
from pipeline.infer.repose import (DEFAULT_SIGMA, Reposer, ReposeError, load_people, read_image,
                                   read_pose_file, repose)

SAMPLE = "data/market1501-sample"
TINY = ModelConfig(encoder_widths=(4, 8, 8, 8, 8, 8), decoder_widths=(8, 8, 8, 8, 4))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    photos = sorted(shared_path(SAMPLE).glob("*.jpg"))
    weights = str(shared_path("weights/yolo11n-pose.pt"))
    root = tmp_path_factory.mktemp("repose")
    model = save_generator(root / "generator.pt", Generator(TINY, 128, 64), TINY, ImageConfig(),
                           {"run_id": None})
    return photos, weights, model


@pytest.fixture(scope="module")
def pose_model(setup):
    from pipeline.data.pose import load_model

    return load_model(setup[1], "cpu")


def _run(setup, source, pose, out, **kw):
    return repose(source, pose, setup[2], out, pose_weights=setup[1], device="cpu", **kw)


def test_single_target_image(setup, tmp_path):
    photos = setup[0]
    paths = _run(setup, photos[0], photos[1], tmp_path / "out.png")
    assert paths == [tmp_path / "out.png"]
    img = Image.open(paths[0])
    assert img.size == (64, 128) and img.mode == "RGB"


def test_folder_of_poses_gives_pngs_and_gif(setup, tmp_path):
    photos = setup[0]
    folder = tmp_path / "poses"
    folder.mkdir()
    for p in photos[2:5]:
        shutil.copy(p, folder / p.name)
    out = tmp_path / "seq"
    paths = _run(setup, photos[0], folder, out, gif=tmp_path / "seq.gif")
    assert [p.name for p in paths] == [p.with_suffix(".png").name for p in photos[2:5]]
    assert all(Image.open(p).size == (64, 128) for p in paths)
    gif = Image.open(tmp_path / "seq.gif")
    assert gif.n_frames == 3 and gif.size == (64, 128)


def test_person_in_a_wide_photo_is_cropped_to_the_same_framing(setup, pose_model, tmp_path):
    # The same Market crop, alone and pasted small into a wide grey scene: after cropping,
    # both yield a 128x64 person whose joints land in about the same places.
    photo = setup[0][5]
    img = cv2.imread(str(photo))
    scene = np.full((300, 600, 3), 128, np.uint8)
    scene[100:228, 400:464] = img
    wide = tmp_path / "wide.png"
    cv2.imwrite(str(wide), scene)
    alone, pasted = load_people([photo, wide], pose_model, (128, 64), "source")
    assert pasted.image.shape == (128, 64, 3)
    torso = [J[j] for j in ("r_shoulder", "l_shoulder", "r_hip", "l_hip")]
    # Person box + 10 % margin vs the original loose crop: same centre, similar scale.
    d = np.abs(alone.keypoints[torso].mean(0) - pasted.keypoints[torso].mean(0))
    assert d[0] < 8 and d[1] < 20, d


def test_json_and_csv_targets(setup, pose_model, tmp_path):
    photos = setup[0]
    kp = load_people([photos[3]], pose_model, (128, 64), "target")[0].keypoints
    single = tmp_path / "walk.json"
    single.write_text(json.dumps({"keypoints": kp.tolist()}))
    assert _run(setup, photos[0], single, tmp_path / "o")[0] == tmp_path / "o" / "walk.png"
    # Named poses in a 32x64 frame are rescaled to the model resolution.
    named = tmp_path / "named.json"
    half = np.where(kp >= 0, kp / 2, -1.0)
    named.write_text(json.dumps({"a": half.tolist(), "b": half.tolist(), "width": 32, "height": 64}))
    poses = read_pose_file(named, 128, 64)
    assert [n for n, _ in poses] == ["a", "b"]
    np.testing.assert_allclose(poses[0][1], kp, atol=1e-4)
    csv = tmp_path / "ann.csv"
    write_annotation_csv(csv, ["x1.jpg", "x2.jpg"], np.rint(kp)[None].repeat(2, 0))
    paths = _run(setup, photos[0], csv, tmp_path / "c")
    assert [p.name for p in paths] == ["x1.png", "x2.png"]


def test_errors_name_the_file(setup, tmp_path, capsys):
    photos = setup[0]
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((128, 64, 3), 90, np.uint8))
    with pytest.raises(ReposeError, match=r"blank\.png: no person"):
        _run(setup, blank, photos[1], tmp_path / "o.png")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(Path(photos[1]).read_bytes()[:500])
    with pytest.raises(ReposeError, match=r"corrupt\.jpg"):
        _run(setup, photos[0], corrupt, tmp_path / "o.png")
    three = tmp_path / "three.json"
    joints = [[-1, -1]] * 18
    joints[0], joints[1], joints[2] = [30, 10], [30, 25], [20, 25]
    three.write_text(json.dumps({"keypoints": joints}))
    with pytest.raises(ReposeError, match=r"three\.json.*too few joints.*l_shoulder"):
        _run(setup, photos[0], three, tmp_path / "o.png")
    assert not (tmp_path / "o.png").exists()
    code = main(["--source", str(photos[0]), "--pose", str(three), "--model", str(setup[2]),
                 "--out", str(tmp_path / "o.png"), "--pose-weights", setup[1], "--device", "cpu"])
    assert code == 2 and "three.json" in capsys.readouterr().err


# --------------------------------------------------------------------------- the library (the demo's)


def test_read_image_checks_format_and_size_before_decoding(setup, tmp_path):
    from support.demo_server import huge_png

    photo = setup[0][0]
    img = read_image(photo)
    assert img.shape == (128, 64, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, cv2.imread(str(photo)))
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "head.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (tmp_path / "cut.jpg").write_bytes(Path(photo).read_bytes()[:1500])
    for name, problem in (("notes.txt", "not an image file"), ("empty.png", "empty file"),
                          ("head.png", "not a decodable PNG image"), ("cut.jpg", "truncated JPEG"),
                          ("missing.jpg", "file not found")):
        with pytest.raises(ReposeError, match=rf"^upload/{name}: {problem}"):
            read_image(tmp_path / name, label=f"upload/{name}")
    # 20000 x 20000 would take 1.2 GB decoded; the header says so first.
    big = huge_png(tmp_path / "huge.png")
    with pytest.raises(ReposeError, match=r"huge\.png: image too large \(20000x20000 pixels; the limit is 50 megapixels\)"):
        read_image(big)
    with pytest.raises(ReposeError, match="the limit is 0.008 megapixels"):
        read_image(photo, max_pixels=8000)  # 64 x 128 = 8192


def test_read_image_reads_the_file_once(setup, monkeypatch):
    """The checks and the decoder share one read (an upload is read from disk once)."""
    reads, real = [], Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or real(self))
    assert read_image(setup[0][0]).shape == (128, 64, 3)
    assert reads == [Path(setup[0][0])]


def test_reposer_arrays_in_arrays_out(setup, pose_model, tmp_path):
    photos, _, model = setup
    r = Reposer.load(model, pose_model, "cpu")
    assert r.hw == (128, 64) and r.sigma == DEFAULT_SIGMA
    images = [read_image(p) for p in photos[:2]]
    src, tgt = r.people(images, ["a.jpg", "b.jpg"], ["source", "target"])
    assert (src.name, tgt.name) == ("a", "b") and src.image.shape == (128, 64, 3)
    frames = r.generate(src, np.stack([tgt.keypoints, src.keypoints]))
    assert frames.shape == (2, 128, 64, 3) and frames.dtype == np.uint8
    assert np.abs(frames[0].astype(int) - frames[1]).mean() > 0.1  # the pose matters
    blank = np.full((128, 64, 3), 90, np.uint8)
    with pytest.raises(ReposeError, match=r"^blank\.png: no person found in the target image"):
        r.people([images[0], blank], ["a.jpg", "blank.png"], ["source", "target"])


def test_a_file_that_is_no_generator_is_one_line(setup, tmp_path):
    garbage = tmp_path / "notes.pt"
    garbage.write_text("not a checkpoint\n")
    with pytest.raises(ReposeError) as info:
        Reposer.load(garbage, None, "cpu")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{garbage}: not a generator checkpoint"), msg
    with pytest.raises(ReposeError, match="checkpoint not found"):
        Reposer.load(tmp_path / "absent.pt", None, "cpu")


def test_out_named_like_a_jpeg_is_that_jpeg(setup, pose_model, tmp_path):
    photos = setup[0]
    kp = load_people([photos[3]], pose_model, (128, 64), "target")[0].keypoints
    target = tmp_path / "walk.json"
    target.write_text(json.dumps({"keypoints": kp.tolist()}))
    out = tmp_path / "x.jpg"
    assert _run(setup, photos[0], target, out) == [out]
    assert out.is_file() and Image.open(out).format == "JPEG" and Image.open(out).size == (64, 128)


def test_absurd_infinite_and_empty_poses_are_one_line(setup, pose_model, tmp_path, capsys):
    photos = setup[0]
    kp = load_people([photos[3]], pose_model, (128, 64), "target")[0].keypoints.tolist()
    cases = {
        "far": ({"keypoints": kp[:1] + [[1e9, 40.0]] + kp[2:]},
                (r"far\.json: pose 'keypoints' joint 1 at \(1e\+09, 40\) lies far outside the 64x128 frame")),
        "inf": ({"a": kp[:3] + [[float("inf"), 5.0]] + kp[4:]}, r"inf\.json: pose 'a' joint 3 is not a finite"),
        "empty": ({"width": 64, "height": 128}, r"empty\.json: no poses in the file"),
    }
    for name, (obj, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(obj))  # inf is written as Infinity, which json reads back
        with pytest.raises(ReposeError, match=message):
            _run(setup, photos[0], path, tmp_path / "o.png")
        code = main(["--source", str(photos[0]), "--pose", str(path), "--model", str(setup[2]),
                     "--out", str(tmp_path / "o.png"), "--pose-weights", setup[1], "--device", "cpu"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and f"{name}.json" in err, err
    assert not (tmp_path / "o.png").exists()
    # The library refuses an empty pose too (the demo calls it with edited poses).
    r = Reposer.load(setup[2], pose_model, "cpu")
    src = r.people([read_image(photos[0])], ["a.jpg"], "source")[0]
    with pytest.raises(ReposeError, match="target pose 1 is empty"):
        r.generate(src, np.stack([np.asarray(kp, np.float32), np.full((18, 2), -1, np.float32)]))
    with pytest.raises(ReposeError, match="no target poses"):
        r.generate(src, np.zeros((0, 18, 2), np.float32))
