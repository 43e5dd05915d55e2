"""stages/cli.py: every stage ends a user error the same way (one line on stderr naming the
stage and the file or setting, exit 2) and keeps a bug's traceback. Each stage is run as a
real subprocess, the way DVC runs it."""
from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from stages.cli import USER_ERROR, run_stage
from support.imports import ROOT

STAGES = ("download", "pose", "heatmaps", "pairs", "train", "evaluate")


def run_cli(stage: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", f"stages.{stage}", *args], cwd=cwd or ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def assert_one_line(result: subprocess.CompletedProcess, stage: str, *words: str) -> None:
    assert result.returncode == USER_ERROR, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"{stage}: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize("stage", STAGES)
def test_a_bad_setting_is_one_line_naming_it(stage, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("heatmaps:\n  sigmaa: 6\n")  # a typo in a section the stage does not use
    assert_one_line(run_cli(stage, "--params", str(params)), stage, "params.yaml", "heatmaps.sigmaa")


@pytest.mark.parametrize("setting", ["train:\n  batch_size: 0\n", "train:\n  checkpoint_every: -1\n",
                                     "image:\n  height: 100\n"])
def test_out_of_range_values_stop_train_before_anything_runs(setting, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(setting)
    key = setting.split(":")[0] if "image" in setting else setting.split("\n")[1].split(":")[0].strip()
    assert_one_line(run_cli("train", "--params", str(params)), "train", key)


@pytest.mark.parametrize("stage", ["heatmaps", "pairs", "train"])
def test_a_corrupt_keypoint_table_is_one_line_naming_the_file(stage, tmp_path):
    table = tmp_path / "keypoints.parquet"
    table.write_bytes(b"PAR1 this is not a parquet file")
    params = tmp_path / "params.yaml"
    params.write_text(f"paths:\n  keypoints: {table}\n  pairs: {table}\n  manifest: {table}\n")
    assert_one_line(run_cli(stage, "--params", str(params)), stage, str(table))


def test_os_conditions_name_the_file_and_bugs_keep_their_traceback(capsys):
    def full_disk(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/models/last.pt")

    assert run_stage("train", full_disk) == USER_ERROR
    assert capsys.readouterr().err == "train: error: /data/models/last.pt: No space left on device\n"

    def bug(argv):
        return {}["missing"]

    with pytest.raises(KeyError):
        run_stage("train", bug)


def test_a_read_only_output_folder_is_one_line(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the errno path is tested above")
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    params = tmp_path / "params.yaml"
    params.write_text(f"paths:\n  dataset: {out / 'dataset'}\n  manifest: {out / 'm.parquet'}\n"
                      f"  dataset_summary: {out / 's.json'}\n")
    assert_one_line(run_cli("download", "--params", str(params)), "download", str(out))
