"""pipeline.train.validation (+ the loop's validation hook): the fixed subset, eval-mode scoring
with the evaluate stage's code, the history and best.pt, resume, no-test-pairs."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.model.checkpoint import load_generator, safe_load
from pipeline.core.config import EvaluateConfig, PathsConfig
from pipeline.data.pair_dataset import load_pair_dataset
from pipeline.core.device import setup_device
from pipeline.model.generator import Generator
from pipeline.data.preview import TITLE_H
from pipeline.eval.samples import first_per_identity, grid_pairs, pair_identities
from pipeline.train.training import train
from pipeline.train.validation import (
    BestScore,
    ValidationHistory,
    ValidationSet,
    choose_pairs,
    open_validation_set,
    summarise,
    validate,
)
from support.tiny_data import H, W, build_tiny_data, tiny_params

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = setup_device("cpu", amp=False)


def with_test_split(root: Path) -> PathsConfig:
    """Tiny data of 4 ids: ids 1-2 train, ids 3-4 held out as the test split."""
    paths = build_tiny_data(root, ids=4)
    pairs = pd.read_parquet(paths.pairs)
    pairs["split"] = np.where(pairs["person_id"] > 2, "test", "train")
    pairs.to_parquet(paths.pairs, index=False)
    return dataclasses.replace(paths, train_validation=str(root / "plots" / "validation.csv"))


@pytest.fixture
def data(tmp_path: Path) -> PathsConfig:
    return with_test_split(tmp_path / "data")


def _test_set(paths: PathsConfig):
    return load_pair_dataset(paths, H, W, split="test")


# --------------------------------------------------------------------------- pure pieces


def test_choose_pairs_is_a_seeded_fixed_subset_that_leaves_global_rngs_alone() -> None:
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    a = choose_pairs(100, 10, seed=3)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert np.array_equal(a, choose_pairs(100, 10, seed=3))       # same every time
    assert not np.array_equal(a, choose_pairs(100, 10, seed=4))   # the seed decides
    assert len(set(a.tolist())) == 10 and np.all(np.diff(a) > 0) and a.max() < 100
    assert choose_pairs(5, 64, seed=0).tolist() == [0, 1, 2, 3, 4]  # fewer pairs: all of them


def test_first_pair_per_identity_and_grid_rows(data: PathsConfig) -> None:
    assert first_per_identity(["b", "b", "a", "c", "a", "d"], k=3).tolist() == [0, 2, 3]
    assert first_per_identity([], k=8).tolist() == []
    ds = _test_set(data)
    ids = pair_identities(ds, np.arange(len(ds)))
    want = [f"{i:04d}" for i in (3, 4)]
    assert sorted(set(ids.tolist())) == [3, 4]
    rows = grid_pairs(ds)
    names = [ds.names[ds.pair_a[r]][:4] for r in rows]
    assert names == want  # one row per identity, not the first 8 pairs of one id


def test_summarise_leaves_out_nan_pairs_and_pools_pckh() -> None:
    per = {"ssim": [np.array([0.2, 0.4])], "mask_ssim": [np.array([0.5, np.nan]), np.array([0.7])],
           "masked_l1": [np.array([np.nan])], "pckh_correct": [np.array([1, 2])],
           "pckh_total": [np.array([2, 6])]}
    out = summarise(per)
    assert out["ssim"] == pytest.approx(0.3) and out["mask_ssim"] == pytest.approx(0.6)
    assert math.isnan(out["masked_l1"]) and out["pckh"] == pytest.approx(3 / 8)


def test_best_score_direction_nan_and_state() -> None:
    best = BestScore("masked_l1")
    assert not best.improves({"masked_l1": math.nan})
    assert best.improves({"masked_l1": 0.3})
    best.update(10, {"masked_l1": 0.3})
    assert best.improves({"masked_l1": 0.2}) and not best.improves({"masked_l1": 0.4})
    up = BestScore("mask_ssim", 0.5, 4)
    assert up.improves({"mask_ssim": 0.6}) and not up.improves({"mask_ssim": 0.5})
    assert BestScore.from_state(up.state(), "mask_ssim") == up
    assert BestScore.from_state(up.state(), "ssim") == BestScore("ssim")  # other metric: afresh


def test_history_round_trip_and_csv(tmp_path: Path) -> None:
    h = ValidationHistory()
    h.append(5, {"ssim": 0.1, "mask_ssim": 0.2, "masked_l1": 0.3})
    h.append(10, {"ssim": 0.4, "mask_ssim": 0.5})
    again = ValidationHistory.from_state(h.state())
    assert again.rows[0] == h.rows[0] and again.steps() == [5, 10] and math.isnan(again.last()["masked_l1"])
    table = pd.read_csv(h.write_csv(tmp_path / "v" / "val.csv"))
    assert table.columns.tolist() == ["step", "ssim", "mask_ssim", "masked_l1"]
    assert table["step"].tolist() == [5, 10] and table["mask_ssim"].tolist() == [0.2, 0.5]


# --------------------------------------------------------------------------- scoring


def test_validation_equals_the_evaluate_stage_on_the_same_pairs(data: PathsConfig, tmp_path: Path) -> None:
    """Validation over all test pairs gives the evaluate stage's own model scores; dropout is
    off (two validations agree) and G is left in train mode."""
    from pipeline.eval.evaluation import score_generated

    params = tiny_params()
    torch.manual_seed(0)
    G = Generator(params.model, H, W).train()
    ds = _test_set(data)
    vset = ValidationSet(ds, choose_pairs(len(ds), 1000, seed=0), batch_size=5)
    first = validate(G, vset, CPU)
    assert G.training
    assert validate(G, vset, CPU) == first
    summary, _, _ = score_generated(G, ds, tmp_path / "eval", EvaluateConfig(batch_size=7), "cpu")
    for key in ("ssim", "mask_ssim", "masked_l1"):
        assert first[key] == pytest.approx(summary["model"][key], rel=1e-9, abs=1e-12), key


def test_validation_scores_the_evaluate_stages_frame(data: PathsConfig, tmp_path: Path) -> None:
    """With evaluate.frame (DeepFashion's papers' frame) validation scores what evaluate scores:
    the same cut images, so the two agree, and differ from scoring the whole canvas."""
    from pipeline.data import canvas
    from pipeline.eval.evaluation import score_generated

    params = tiny_params(val_every=2, val_pairs=1000)
    params = dataclasses.replace(params, evaluate=dataclasses.replace(params.evaluate, frame=(H, W // 2)))
    vset = open_validation_set(params, data)
    assert vset.frame == canvas.aspect_frame(H, W, (H, W // 2)) == (0, H, W // 4, W // 4 + W // 2)
    torch.manual_seed(0)
    G = Generator(params.model, H, W)
    cut = validate(G, vset, CPU)
    whole = validate(G, dataclasses.replace(vset, frame=None), CPU)
    ds = vset.dataset
    ds.frame = vset.frame
    summary, _, _ = score_generated(G, ds, tmp_path / "eval", EvaluateConfig(batch_size=7), "cpu")
    for key in ("ssim", "mask_ssim", "masked_l1"):
        assert cut[key] == pytest.approx(summary["model"][key], rel=1e-9, abs=1e-12), key
    assert cut["ssim"] != pytest.approx(whole["ssim"], abs=1e-6)


def test_open_validation_set_subset_and_no_test_pairs(data: PathsConfig, tmp_path: Path) -> None:
    params = tiny_params(val_every=2, val_pairs=5)
    vset = open_validation_set(params, data)
    assert vset is not None and vset.indices.tolist() == choose_pairs(12, 5, params.seed).tolist()
    assert open_validation_set(tiny_params(val_every=0, val_pairs=5), data) is None  # off: silent
    train_only = build_tiny_data(tmp_path / "train_only")
    with pytest.warns(UserWarning, match="no test pairs; validation skipped"):
        assert open_validation_set(params, train_only) is None


# --------------------------------------------------------------------------- in the loop


def _out(paths: PathsConfig, root: Path) -> PathsConfig:
    return dataclasses.replace(paths, models=str(root / "models"), train_metrics=str(root / "train.json"),
                               train_plots=str(root / "losses.csv"),
                               train_validation=str(root / "validation.csv"))


def test_loop_validates_keeps_best_and_does_not_change_training(data: PathsConfig, tmp_path: Path) -> None:
    base = dict(steps=5, checkpoint_every=10, val_pairs=6, batches_per_step=1)
    plain = train(tiny_params(val_every=0, **base), _out(data, tmp_path / "plain"), track=False, progress=False)
    out = _out(data, tmp_path / "val")
    run = train(tiny_params(val_every=2, **base), out, track=False, progress=False)
    assert run.history == plain.history  # validation draws no random numbers

    table = pd.read_csv(out.train_validation)
    assert table["step"].tolist() == [2, 4, 5]  # every 2 steps and at the end
    assert [r["step"] for r in run.validation] == [2, 4, 5]
    best_row = table.loc[table["mask_ssim"].idxmax()]
    assert run.best == {"metric": "mask_ssim", "value": pytest.approx(best_row["mask_ssim"], abs=1e-5),
                        "step": int(best_row["step"])}

    # best.pt holds the generator of the best step: re-scoring its weights gives its value.
    G, meta = load_generator(Path(out.models) / "best.pt")
    assert meta["step"] == run.best["step"] and meta["selected_by"] == "mask_ssim"
    vset = open_validation_set(tiny_params(val_every=2, **base), data)
    assert validate(G, vset, CPU)["mask_ssim"] == pytest.approx(meta["value"], abs=1e-9)
    metrics = pd.read_json(out.train_metrics, typ="series")
    assert metrics["best"]["step"] == run.best["step"]
    assert metrics["best"]["mask_ssim"] == pytest.approx(meta["value"], abs=1e-9)
    assert 0 < run.validation_fraction < 1

    # Without validation best.pt is the final generator, its meta saying why.
    _, meta = load_generator(Path(tmp_path / "plain" / "models" / "best.pt"))
    assert meta["step"] == 5 and meta["selected_by"] is None and "validation off" in meta["selection"]
    assert pd.read_csv(tmp_path / "plain" / "validation.csv").empty


def test_resume_keeps_the_validation_history_and_best(data: PathsConfig, tmp_path: Path) -> None:
    params = tiny_params(steps=6, checkpoint_every=3, val_every=2, val_pairs=6)  # batches_per_step 3
    full = train(params, _out(data, tmp_path / "a"), track=False, progress=False)
    b = _out(data, tmp_path / "b")
    cut = train(params, b, track=False, progress=False, stop_after=5)
    assert [r["step"] for r in cut.validation] == [2, 4]
    state = safe_load(Path(b.models) / "checkpoints" / "last.pt")
    assert state["step"] == 3 and state["validation"]["history"]["values"][:, 0].tolist() == [2.0]
    assert state["sampler"]["position"] == 3 * state["sampler"]["loader_batch"]
    resumed = train(params, b, track=False, progress=False)
    assert resumed.history == full.history
    assert resumed.validation == full.validation and resumed.best == full.best
    assert Path(b.train_validation).read_text() == Path(tmp_path / "a" / "validation.csv").read_text()


def test_no_test_pairs_warns_and_best_is_the_final_generator(tmp_path: Path) -> None:
    paths = _out(build_tiny_data(tmp_path / "data"), tmp_path / "out")
    with pytest.warns(UserWarning, match="no test pairs"):
        result = train(tiny_params(steps=2, val_every=1, batches_per_step=1), paths, track=False,
                       progress=False)
    assert result.validation == [] and result.best["step"] is None
    _, meta = load_generator(result.best_path)
    assert meta["step"] == 2 and "no test pairs" in meta["selection"]


def test_mlflow_gets_validation_by_step_and_one_grid_row_per_identity(data: PathsConfig,
                                                                      tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from pipeline.core.config import TrackingConfig

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = dataclasses.replace(tiny_params(steps=4, val_every=2, val_pairs=6, sample_every=4,
                                             batches_per_step=1),
                                 tracking=TrackingConfig(uri=uri, experiment="tests"))
    result = train(params, _out(data, tmp_path / "out"), progress=False)
    client = MlflowClient(tracking_uri=uri)
    for key in ("val/ssim", "val/mask_ssim", "val/masked_l1"):
        history = client.get_metric_history(result.run_id, key)
        assert [m.step for m in history] == [2, 4]
    last = client.get_metric_history(result.run_id, "val/mask_ssim")[-1].value
    assert last == pytest.approx(result.validation[-1]["mask_ssim"])
    art = Path(client.download_artifacts(result.run_id, "samples/step_0000004.png", str(tmp_path)))
    import cv2

    grid = cv2.imread(str(art))
    assert grid.shape == (TITLE_H + 2 * H, 4 * W, 3)  # titles, then the 2 held-out ids, one row each
