"""stages.rehearsal_archive: the archive writers' command line (one line per outcome, exit 2
for a user error)."""
from __future__ import annotations

import zipfile

from pipeline.datasets.deepfashion import ANNOTATION_FILES
from stages import rehearsal_archive
from support.deepfashion_files import TEST, TRAIN, write_lists


def test_deepfashion_archive_from_the_command_line(tmp_path, capsys):
    lists = write_lists(tmp_path / "lists")
    out = tmp_path / "img.zip"
    assert rehearsal_archive.main(["deepfashion", "--lists", str(lists), "--out", str(out), "--workers", "1",
                                   "--subset-dir", str(tmp_path / "ann")]) == 0
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and said[0].startswith(f"rehearsal_archive: {len(TRAIN) + len(TEST)} images")
    with zipfile.ZipFile(out) as z:
        jpgs = [n for n in z.namelist() if n.endswith(".jpg")]
    assert len(jpgs) == len(TRAIN) + len(TEST) and all(n.startswith("img/") for n in jpgs)
    ann = tmp_path / "ann"
    assert sorted((ann / "train.lst").read_text().split()) == sorted(TRAIN)
    assert sorted((ann / "test.lst").read_text().split()) == sorted(TEST)
    assert (ann / ANNOTATION_FILES["train"]).is_file() and (ann / ANNOTATION_FILES["test"]).is_file()


def test_missing_inputs_are_one_line_and_exit_2(tmp_path, capsys):
    assert rehearsal_archive.main(["market", "--annotations", str(tmp_path / "none")]) == 2
    assert rehearsal_archive.main(["deepfashion", "--lists", str(tmp_path), "--out", str(tmp_path / "x.zip")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"rehearsal_archive: error: {tmp_path / 'none' / 'market-annotation-train.csv'}: canonical "
                   "annotation file not found",
                   f"rehearsal_archive: error: {tmp_path / 'train.lst'}: split list not found"]
    assert not (tmp_path / "x.zip").exists()
