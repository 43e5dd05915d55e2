"""bench/bench_gpu.py: importable without pandas/cv2/yaml/mlflow, and its CPU smoke run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("pandas", "cv2", "yaml", "mlflow")


def _python(code_or_args: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *code_or_args], cwd=ROOT, capture_output=True, text=True,
                          env=env, **kw)


def test_import_pulls_in_none_of_the_missing_gpu_machine_packages() -> None:
    out = _python(["-c", "import sys, json, bench.bench_gpu; "
                         f"print(json.dumps([m for m in {FORBIDDEN!r} if m in sys.modules]))"])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_fp32_and_bf16_rows_pair_up_and_fp32_runs_without_tf32() -> None:
    from bench.bench_gpu import SETTINGS, precision_pairs

    assert SETTINGS["fp32"] == (False, False, None, False)  # train.amp false: no TF32
    assert SETTINGS["tf32"][3] and SETTINGS["bf16"][0]
    rows = [{"setting": "fp32", "batch": 4, "ms_per_step": 30.0},
            {"setting": "bf16", "batch": 4, "ms_per_step": 10.0},
            {"setting": "fp32", "batch": 16, "ms_per_step": 90.0},
            {"setting": "bf16", "batch": 16, "error": "OOM"}]
    assert precision_pairs(rows) == {4: {"fp32": 30.0, "bf16": 10.0}}


def test_heatmaps_match_the_pipeline_renderer() -> None:
    from bench.bench_gpu import heatmaps
    from pipeline.data.heatmaps import render_heatmaps

    kp = torch.tensor(np.random.default_rng(0).uniform(0, 60, (3, 18, 2)), dtype=torch.float32)
    kp[0, 4] = -1
    torch.testing.assert_close(heatmaps(kp, 64, 32), render_heatmaps(kp, 64, 32, 6.0), rtol=0, atol=1e-6)


@pytest.mark.slow
def test_cpu_smoke_run_writes_every_section(tmp_path: Path) -> None:
    data, out = tmp_path / "pairs.npz", tmp_path / "gpu.json"
    prep = _python(["-m", "bench.bench_gpu", "--prepare", str(data), "--prepare-images", "8"])
    assert prep.returncode == 0, prep.stderr
    with np.load(data) as z:
        n = len(z["images"])  # at least two people of eight images
        assert n >= 8 and z["images"].shape[1:] == (128, 64, 3) and z["keypoints"].shape == (n, 18, 2)
        assert (z["person_ids"][z["pairs"][:, 0]] == z["person_ids"][z["pairs"][:, 1]]).all()
    run = _python(["-m", "bench.bench_gpu", "--device", "cpu", "--steps", "2", "--warmup", "1",
                   "--widths", "tiny", "--batches", "2", "--settings", "fp32,bf16", "--train-seconds", "1",
                   "--train-batch", "1", "--resume-steps", "1", "--score-pairs", "4",
                   "--data", str(data), "--out", str(out)], timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    r = json.loads(out.read_text())
    errors = {k: v["error"] for k, v in r.items() if isinstance(v, dict) and "error" in v}
    assert not errors, errors
    row = r["throughput"]["rows"][0]
    assert row["finite"] and row["ms_per_step"] > 0 and row["images_per_sec"] > 0
    assert r["throughput"]["best"]["batch"] == 2
    assert r["numerics"]["fp32_vs_cpu"]["max_rel_diff"] == 0  # CPU against CPU
    assert {row["setting"] for row in r["throughput"]["rows"]} == {"fp32", "bf16"}
    assert "tf32_vs_fp32" in r["numerics"]  # TF32 is a no-op off CUDA: equal here
    assert r["numerics"]["tf32_vs_fp32"]["max_rel_diff"] == 0
    assert r["numerics"]["bf16_vs_fp32"]["pass"]
    tr = r["training"]
    assert tr["all_finite"] and tr["resume_exact"] and tr["steps"] > tr["checkpoint_step"]
    assert 0 < r["scorer"]["mean_mask_ssim"] <= 1 and r["scorer"]["score_pairs_per_sec"] > 0
    assert "cpu" in r["environment"]["device"]
