"""pipeline.train.hooks in the real training loop: the MLflow images/s of each window, and
best.pt surviving a fresh run until that run has a better one (CPU, tiny)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core.config import PathsConfig, TrackingConfig
from pipeline.train.training import train
from support.tiny_data import build_tiny_data, tiny_params

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def data(tmp_path: Path) -> PathsConfig:
    """Tiny data of 4 ids: ids 1-2 train, ids 3-4 held out (validation pairs)."""
    paths = build_tiny_data(tmp_path / "data", ids=4)
    pairs = pd.read_parquet(paths.pairs)
    pairs["split"] = np.where(pairs["person_id"] > 2, "test", "train")
    pairs.to_parquet(paths.pairs, index=False)
    return dataclasses.replace(paths, train_validation=str(tmp_path / "data" / "validation.csv"))


def test_images_per_sec_is_measured_from_the_first_completed_step(data: PathsConfig,
                                                                  tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = dataclasses.replace(tiny_params(steps=5, log_every=1, checkpoint_every=2, val_every=0),
                                 tracking=TrackingConfig(uri=uri, experiment="tests"))
    first = train(params, data, progress=False, stop_after=3)  # "killed" after step 3
    resumed = train(params, data, progress=False)  # resumes at the checkpoint of step 2
    assert resumed.run_id == first.run_id and resumed.completed
    history = MlflowClient(tracking_uri=uri).get_metric_history(first.run_id, "images_per_sec")
    # No window at the first step of a process (1, and 3 after the resume): its start
    # would be set-up time the clock never counted.
    assert sorted({m.step for m in history}) == [2, 3, 4, 5]
    assert all(0 < m.value < 1e5 for m in history), [m.value for m in history]  # not ~2e9
    losses = MlflowClient(tracking_uri=uri).get_metric_history(first.run_id, "loss/g_total")
    assert sorted({m.step for m in losses}) == [1, 2, 3, 4, 5]  # losses every step still


def test_fresh_run_keeps_the_old_best_until_it_has_a_better_one(data: PathsConfig) -> None:
    params = tiny_params(steps=2, val_every=2, val_pairs=6, batches_per_step=1)
    done = train(params, data, track=False, progress=False)
    best = Path(done.best_path)
    old = best.read_bytes()
    # A fresh run (another seed) that stops before its first validation: the old best stays.
    fresh = dataclasses.replace(params, seed=params.seed + 1)
    with pytest.warns(UserWarning, match="other params or data; starting afresh"):
        cut = train(fresh, data, track=False, progress=False, stop_after=1)
    assert not cut.completed and best.read_bytes() == old
    # Completed, it replaces best.pt with its own.
    with pytest.warns(UserWarning, match="other params or data; starting afresh"):
        again = train(fresh, data, track=False, progress=False)
    assert again.completed and best.read_bytes() != old
