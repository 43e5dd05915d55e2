"""The demo's requests through its HTTP API (gradio_client against `python -m app` on
127.0.0.1, real YOLO pose, a tiny generator): every way to give a target pose, and bad input
that must come back as a message while the server keeps serving."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from app.handlers import PICTURE_SCALE
from pipeline.infer.poses import move_joint, synthetic_gallery
from support.demo_server import UPLOAD_CAP_MB, huge_png

pytestmark = pytest.mark.slow
H, W = 128, 64  # the tiny generator's resolution


def _call(client, api: str, *args):
    from gradio_client import handle_file

    args = [handle_file(str(a)) if hasattr(a, "suffix") else a for a in args]
    return client.predict(*args, api_name=api)


def _rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), np.float32)


def _check_done(result, target_wh: tuple[int, int] = (W * PICTURE_SCALE, H * PICTURE_SCALE)):
    src, tgt, out, status = result
    assert status.startswith("Done in") and "generate" in status, status
    assert Image.open(src).size == (W * PICTURE_SCALE, H * PICTURE_SCALE)
    assert Image.open(tgt).size == target_wh
    return out


def _source_crop(photo) -> np.ndarray:
    return _rgb(photo)  # Market crops are 64x128 already: the demo takes them whole


def test_photo_and_photo(demo, client):
    photo, other = demo.photos[0], demo.photos[1]
    out = _check_done(_call(client, "/repose_photo", demo.good, photo, other))
    img = Image.open(out)
    assert img.format == "PNG" and img.size == (W, H)
    assert np.abs(_rgb(out) - _source_crop(photo)).mean() > 10  # a generated image, not the source


def test_photo_and_gallery_poses(demo, client):
    photo = demo.photos[2]
    a = _check_done(_call(client, "/repose_gallery", demo.good, photo, 0), (W * 2, H * 2))
    b = _check_done(_call(client, "/repose_gallery", demo.good, photo, 5), (W * 2, H * 2))
    assert Image.open(a).size == Image.open(b).size == (W, H)
    assert np.abs(_rgb(a) - _rgb(b)).mean() > 0.5  # another pose, another image
    assert np.abs(_rgb(a) - _source_crop(photo)).mean() > 10


def test_photo_and_edited_joints(demo, client, tmp_path):
    # The server's gallery is the synthetic one (it runs outside a pipeline checkout): the same
    # renders here give the same pose, which the editor would start from.
    pose = synthetic_gallery(tmp_path, 1).as_json(0)
    assert len(pose["keypoints"]) == 18 and (pose["width"], pose["height"]) == (W, H)
    edited = move_joint(move_joint(pose, "r_wrist", 4, 10), "l_wrist", 60, 10)  # both arms up
    photo = demo.photos[3]
    before = _check_done(_call(client, "/repose_pose", demo.good, photo, json.dumps(pose)))
    after = _check_done(_call(client, "/repose_pose", demo.good, photo, json.dumps(edited)))
    assert np.abs(_rgb(before) - _rgb(after)).max() > 10  # the moved joints change the picture
    assert edited["keypoints"][4] == [4.0, 10.0]


def test_animation_of_four_poses(demo, client):
    src, strip, gif, status = _call(client, "/animate", demo.good, demo.photos[4], "0, 3, 6, 9")
    assert status.startswith("Done in") and "GIF of 4 frames" in status, status
    assert Image.open(strip).size == (4 * W, H)  # the four target skeletons side by side
    anim = Image.open(gif)
    assert anim.format == "GIF" and anim.n_frames == 4 and anim.size == (W, H)
    frames = []
    for k in range(4):
        anim.seek(k)
        frames.append(np.asarray(anim.convert("RGB"), np.float32))
    assert all(np.abs(frames[0] - f).mean() > 0.5 for f in frames[1:])


def _error(result) -> str:
    src, tgt, out, status = result
    assert status.startswith("Error: ") and "\n" not in status, status
    assert src is None and tgt is None and out is None
    return status


def _still_serves(demo, client) -> None:
    _check_done(_call(client, "/repose_gallery", demo.good, demo.photos[0], 1), (W * 2, H * 2))


def test_bad_files_are_messages_and_the_server_goes_on(demo, client, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("a text file, not a photo\n")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(demo.photos[0].read_bytes()[:1500])  # header whole, pixels cut off
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((H, W, 3), 120, np.uint8)).save(blank)
    for path, expected in ((text, "notes.txt: not an image file"), (empty, "empty.jpg: empty file"),
                           (cut, "cut.jpg: truncated JPEG"),
                           (blank, "blank.png: no person found in the source image")):
        assert expected in _error(_call(client, "/repose_gallery", demo.good, path, 0))
        _still_serves(demo, client)
    # A bad target photo names the target.
    assert "notes.txt: not an image file" in _error(_call(client, "/repose_photo", demo.good, demo.photos[0], text))


def test_a_huge_image_is_refused_before_decoding(demo, client, tmp_path):
    big = huge_png(tmp_path / "huge.png")  # 20000 x 20000: 1.2 GB once decoded as BGR
    assert big.stat().st_size < UPLOAD_CAP_MB * 2**20  # under the upload cap: the pixel cap must act
    before = demo.rss_peak_mb()
    status = _error(_call(client, "/repose_gallery", demo.good, big, 0))
    assert "huge.png: image too large (20000x20000 pixels" in status
    assert demo.rss_peak_mb() - before < 300, "the server decoded the image before refusing it"
    _still_serves(demo, client)


def test_uploads_over_the_cap_are_refused(demo, client, tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(demo.photos[0].read_bytes() + bytes(UPLOAD_CAP_MB * 2**20))
    with pytest.raises(Exception, match=r"(?i)size|large|413"):
        _call(client, "/repose_gallery", demo.good, big, 0)
    _still_serves(demo, client)


def test_wrong_checkpoint_and_wrong_choices_are_messages(demo, client):
    status = _error(_call(client, "/repose_gallery", demo.bad, demo.photos[0], 0))
    assert "bad.pt: not a generator checkpoint" in status
    _still_serves(demo, client)
    assert "gallery pose 99 does not exist" in _error(_call(client, "/repose_gallery", demo.good, demo.photos[0], 99))
    assert "not valid JSON" in _error(_call(client, "/repose_pose", demo.good, demo.photos[0], "{oops"))
    assert "too few joints" in _error(_call(client, "/repose_pose", demo.good, demo.photos[0],
                                             json.dumps({"keypoints": [[-1, -1]] * 18})))
    assert "2 to 32 gallery numbers" in _error(_call(client, "/animate", demo.good, demo.photos[0], "3"))
    _still_serves(demo, client)


def test_nothing_is_written_outside_the_temp_folder(demo, client):
    _still_serves(demo, client)
    assert not any(demo.cwd.iterdir()), sorted(p.name for p in demo.cwd.iterdir())
    # Under TMPDIR: the demo's own folder (uploads, outputs, gradio's cache), and no file elsewhere
    # (torch may leave an empty torchinductor_<user> folder there).
    ours = [p for p in demo.tmp.iterdir() if p.name.startswith("deformable-gan-demo-")]
    assert len(ours) == 1 and any(f.is_file() for f in ours[0].rglob("*"))
    stray = [f for f in demo.tmp.rglob("*") if f.is_file() and ours[0] not in f.parents]
    assert not stray, stray
