"""End to end: train + evaluate under `dvc repro`, then `dvc exp run -S ...` experiments that
DVC and MLflow both show (tiny settings, offline, in a temporary git repo)."""
from __future__ import annotations

import json

import pytest

from conftest import SHARED
from dvc_project import dvc, make_project, stages_run

pytestmark = pytest.mark.slow

VGG = SHARED / "weights" / "vgg19_features_caffe_rgb_fp16.pt"
YOLO = SHARED / "weights" / "yolo11n-pose.pt"


def tiny_settings() -> dict:
    settings = {
        "image.height": 64,
        "image.width": 32,
        "data.synthetic.train_ids": 3,
        "data.synthetic.test_ids": 2,
        "data.synthetic.images_per_id": 3,
        "heatmaps.sigma": 3.0,
        "model.encoder_widths": [8, 8, 16, 16, 16, 16],
        "model.decoder_widths": [16, 16, 16, 8, 8],
        "model.disc_widths": [8, 8, 16, 16],
        "train.steps": 3,
        "train.batch_size": 2,
        "train.num_workers": 0,
        "train.checkpoint_every": 2,
        "train.log_every": 1,
        "train.sample_every": 3,
        "evaluate.batch_size": 4,
        "evaluate.grid_pairs": 2,
        "evaluate.download": False,  # tests never fetch weights, even on a machine online
    }
    # The NN loss needs VGG19 weights; offline they come from ../shared. Without them the
    # experiment varies the L1 weight instead, so the test still runs end to end.
    if VGG.is_file():
        settings.update({"loss.vgg_weights": str(VGG), "loss.nn_weight": 0.01})
    else:
        settings.update({"loss.nn_weight": 0.0, "loss.l1_weight": 1.0})
    settings["evaluate.pose_weights"] = str(YOLO) if YOLO.is_file() else None
    return settings


def find(node, key):
    """Every value stored under `key` anywhere in a JSON tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from find(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from find(v, key)


def mlflow_runs(proj):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{proj / 'mlflow.db'}")
    experiments = client.search_experiments()
    return client, client.search_runs([e.experiment_id for e in experiments])


def test_repro_trains_evaluates_and_experiments_show_in_dvc_and_mlflow(tmp_path):
    proj = make_project(tmp_path / "proj", tiny_settings())
    first = dvc("repro", cwd=proj)
    assert stages_run(first.stdout) == ["download", "pose", "heatmaps", "pairs", "train", "evaluate"]
    assert (proj / "models" / "generator.pt").is_file()
    metrics = json.loads((proj / "metrics" / "eval.json").read_text())
    assert metrics["pairs"] > 0
    for who in ("model", "copy_source"):
        assert 0.0 <= metrics[who]["ssim"] <= 1.0
        assert metrics[who]["masked_l1"] is not None
    assert (proj / "data" / "evaluation" / "grid.png").is_file()

    client, runs = mlflow_runs(proj)
    assert len(runs) == 1
    run = runs[0]
    assert "eval/model/ssim" in run.data.metrics and "loss/g_total" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/grid.png" in artifacts

    # Experiments: only train and evaluate rerun; both show in DVC and as MLflow runs.
    key = "loss.nn_weight" if VGG.is_file() else "loss.l1_weight"
    for value in ("0.02", "0.05"):
        out = dvc("exp", "run", "-S", f"{key}={value}", cwd=proj)
        assert stages_run(out.stdout) == ["train", "evaluate"]
    shown = json.loads(dvc("exp", "show", "--json", cwd=proj).stdout)
    text = json.dumps(shown)
    assert text.count('"name"') >= 2 and "0.02" in text and "0.05" in text
    # Metrics live in git-tracked files, so DVC shows them for each experiment.
    evals = [s for s in find(shown, "metrics/eval.json") if isinstance(s, dict) and "data" in s]
    assert len(evals) >= 2 and all("model" in s["data"] for s in evals)

    _, runs = mlflow_runs(proj)
    by_value = {r.data.params.get(key): r for r in runs}
    assert {"0.02", "0.05"} <= set(by_value)
    for value in ("0.02", "0.05"):
        run = by_value[value]
        assert run.info.run_name and run.info.run_name != "evaluate"  # named after the DVC experiment
        assert "eval/model/ssim" in run.data.metrics
