"""pipeline.train.training: learning, exact resume, NaN handling and the stage outputs (CPU, tiny)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.model.checkpoint import load_generator, safe_load
from pipeline.core.config import PathsConfig
from pipeline.data.pair_dataset import collate_pairs, load_pair_dataset
from pipeline.train.training import NonFiniteLossError, run_fingerprint, train
from support.tiny_data import H, W, build_tiny_data, tiny_params

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny(tmp_path: Path) -> PathsConfig:
    paths = build_tiny_data(tmp_path / "data")
    return dataclasses.replace(paths, train_validation=str(tmp_path / "data" / "validation.csv"))


def _dataset(paths: PathsConfig):
    return load_pair_dataset(paths, H, W)


def _in(paths: PathsConfig, root: Path) -> PathsConfig:
    """Same inputs, outputs under another folder (a second, independent run)."""
    return dataclasses.replace(paths, models=str(root / "models"),
                               train_metrics=str(root / "train.json"),
                               train_plots=str(root / "plots.csv"),
                               train_validation=str(root / "validation.csv"))


def test_resume_reproduces_an_uninterrupted_run_exactly(tiny: PathsConfig, tmp_path: Path) -> None:
    params = tiny_params(steps=6, checkpoint_every=3)  # dropout 0.5 on: its RNG must resume too
    ds = _dataset(tiny)
    full = train(params, _in(tiny, tmp_path / "a"), dataset=ds, track=False, progress=False)
    assert full.completed and full.steps == 6

    b = _in(tiny, tmp_path / "b")
    cut = train(params, b, dataset=ds, track=False, progress=False, stop_after=5)  # "crash" at 5
    assert not cut.completed and cut.steps == 5 and cut.generator_path is None
    assert safe_load(Path(b.models) / "checkpoints" / "last.pt")["step"] == 3
    resumed = train(params, b, dataset=ds, track=False, progress=False)  # redoes steps 4..6
    assert resumed.completed and resumed.steps == 6
    assert resumed.history == full.history  # every loss of every step, bit for bit
    for key, values in full.history.items():
        assert cut.history[key] == values[:5]
    ga, _ = load_generator(Path(full.generator_path))
    gb, _ = load_generator(Path(resumed.generator_path))
    for (name, ta), tb in zip(ga.state_dict().items(), gb.state_dict().values()):
        assert torch.equal(ta, tb), name


def test_outputs_metrics_plots_and_generator(tiny: PathsConfig) -> None:
    params = tiny_params(steps=5, checkpoint_every=10, log_every=2)
    result = train(params, tiny, track=False, progress=False)
    metrics = json.loads(Path(tiny.train_metrics).read_text())
    assert metrics["steps"] == 5 and metrics["images_per_sec"] > 0
    assert set(metrics) <= {"steps", "images_per_sec", "best"}
    assert set(result.smoothed_losses) == {"g_adv", "g_l1", "g_offset_smooth", "g_total", "d_real", "d_fake", "d"}
    assert all(isinstance(v, (int, float)) for v in pd.json_normalize(metrics).iloc[0])
    plots = pd.read_csv(tiny.train_plots)
    assert plots["step"].tolist() == [2, 4, 5]
    assert plots["g_l1"].iloc[0] == pytest.approx(np.mean(result.history["g_l1"][:2]))
    # one checkpoint (at the end), no previous one
    ckpts = sorted(p.name for p in (Path(tiny.models) / "checkpoints").iterdir())
    assert ckpts == ["last.pt"]
    G, meta = load_generator(Path(tiny.models) / "generator.pt")
    assert meta["step"] == 5 and meta["model"] == params.model and meta["image"] == params.image
    batch = collate_pairs(_dataset(tiny).__getitems__([0, 1]))
    with torch.no_grad():
        out = G(batch["xa"], batch["ha"], batch["hb"], batch["kpa"], batch["kpb"]).image
    assert out.shape == (2, 3, H, W) and torch.isfinite(out).all()


class _Poisoned:
    """A dataset whose target images are NaN: the generator's L1 loss becomes NaN."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitems__(self, indices):
        items = self.ds.__getitems__(indices)
        for it in items:
            it["xb"] = torch.full_like(it["xb"], float("nan"))
        return items


def test_nan_loss_stops_with_step_and_terms_and_keeps_last_checkpoint(tiny: PathsConfig) -> None:
    ds = _dataset(tiny)
    train(tiny_params(steps=4, checkpoint_every=2), tiny, dataset=ds, track=False, progress=False,
          stop_after=2)
    last = Path(tiny.models) / "checkpoints" / "last.pt"
    digest = hashlib.sha256(last.read_bytes()).hexdigest()
    with pytest.raises(NonFiniteLossError, match=r"step 3: .*g_l1=nan.*Last good checkpoint: .*last\.pt \(step 2\)"):
        train(tiny_params(steps=4, checkpoint_every=1), tiny, dataset=_Poisoned(ds), track=False,
              progress=False)
    assert hashlib.sha256(last.read_bytes()).hexdigest() == digest
    assert not (Path(tiny.models) / "generator.pt").exists()


def test_fingerprint_follows_run_settings_and_training_data(tiny: PathsConfig,
                                                            tmp_path: Path) -> None:
    params = tiny_params()
    base = run_fingerprint(params, tiny)
    # Where outputs go and how long / how often to log do not change the run.
    longer = dataclasses.replace(params, train=dataclasses.replace(params.train, steps=99,
                                                                   log_every=7))
    assert run_fingerprint(longer, _in(tiny, tmp_path / "elsewhere")) == base
    nn = dataclasses.replace(params, loss=dataclasses.replace(params.loss, nn_window=5))
    assert run_fingerprint(nn, tiny) != base
    # The pose stage rerun: the same rows with other provenance metadata: the same run.
    arrow = pq.read_table(tiny.keypoints)
    pq.write_table(arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), b"pose": b'{"at": 2}'}),
                   tiny.keypoints)
    assert run_fingerprint(params, tiny) == base
    # New keypoints (e.g. another pose backend) with the very same pairs: another run.
    table = pd.read_parquet(tiny.keypoints)
    table["nose_x"] += 1.0
    table.to_parquet(tiny.keypoints, index=False)
    assert run_fingerprint(params, tiny) != base


def test_a_second_training_on_one_models_folder_stops_with_one_line(tiny: PathsConfig, tmp_path: Path,
                                                                    capsys) -> None:
    """Two `stages.train` outside DVC: the second one meets the first's lock and exits 2 with
    one line, leaving the first (a real process, still training) alone."""
    import os
    import subprocess
    import sys
    import time

    import yaml

    from pipeline.core.config import to_dict
    from stages.train import main

    raw = to_dict(tiny_params(steps=100_000, checkpoint_every=100_000, log_every=1000))
    raw["paths"] = {**raw["paths"], **to_dict(tiny)}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    root = Path(__file__).resolve().parents[2]
    first = subprocess.Popen([sys.executable, "-m", "stages.train", "--params", str(params_file),
                              "--no-tracking", "--quiet"], cwd=root, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)})
    lock = Path(tiny.models) / ".train.lock"
    try:
        deadline = time.monotonic() + 120
        while not (lock.is_file() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None, first.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the first training never took the lock"
            time.sleep(0.2)
        assert main(["--params", str(params_file), "--no-tracking", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err == (f"train: error: {tiny.models}: in use by another train (pid {first.pid}; lock {lock}); "
                       "wait for it or give another folder\n")
        assert first.poll() is None  # still training
    finally:
        first.kill()
        first.wait()
