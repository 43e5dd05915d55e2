"""DDP: `torchrun --nproc_per_node 2 -m stages.train` on CPU (gloo) with the real stage CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from pipeline.model.checkpoint import load_generator, safe_load
from pipeline.core.config import load_params, to_dict
from support.tiny_data import build_tiny_data, tiny_params

ROOT = Path(__file__).resolve().parents[2]


def test_torchrun_two_cpu_processes_train_and_write_one_checkpoint(tmp_path: Path) -> None:
    paths = build_tiny_data(tmp_path / "data")
    params = tiny_params(steps=3, batch_size=2, checkpoint_every=100, log_every=1)
    raw = to_dict(params)
    raw["paths"] = {**raw["paths"], **to_dict(paths)}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    assert load_params(params_file).train.steps == 3

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "stages.train", "--params", str(params_file), "--no-tracking", "--quiet"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("train: done at step 3") == 1  # rank 0 reports, rank 1 stays quiet

    ckpt_dir = Path(paths.models) / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.pt"]  # one write, by rank 0
    state = safe_load(ckpt_dir / "last.pt")
    assert state["step"] == 3 and state["sampler"]["world_size"] == 2
    assert len(state["rng"]) == 2  # every rank's RNG, for an exact DDP resume
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])  # own dropout streams
    assert not any(k.startswith("module.") for k in state["G"])  # saved unwrapped
    metrics = json.loads(Path(paths.train_metrics).read_text())
    assert metrics["steps"] == 3 and state["sampler"]["world_size"] == 2
    G, meta = load_generator(Path(paths.models) / "generator.pt")
    assert meta["step"] == 3
