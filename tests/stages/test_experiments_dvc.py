"""End to end: train + evaluate under `dvc repro`, then two experiments queued with
`dvc exp run --queue -S ...` and run in parallel by `dvc queue start -j 2`, which DVC and
MLflow both show (tiny settings, offline, in a temporary git repo)."""
from __future__ import annotations

import json
import os
import time

import pytest

from conftest import SHARED
from dvc_project import EXP_SHOW_DROP, dvc, make_project, stages_run
from dvc_project import run as git_run

pytestmark = pytest.mark.slow

VGG = SHARED / "weights" / "vgg19_features_caffe_rgb_fp16.pt"
YOLO = SHARED / "weights" / "yolo11n-pose.pt"


def weight_settings() -> dict:
    """VGG19 (NN loss) and YOLO (DS/PCKh) weights for the tiny runs, never downloaded.

    Registered names resolved through $DEFORMABLE_GAN_WEIGHTS (tests/conftest.py points it
    at ../shared/weights) when pipeline.core.weights resolves them offline; else the ../shared files
    by path; else no NN loss (the experiments vary the L1 weight) and no pose metrics."""
    settings: dict = {}
    try:
        from pipeline.core import weights

        if os.environ.get(weights.ENV_FOLDER):
            for name, param in (("vgg19_keras", "loss.vgg_weights"), ("yolo11n-pose.pt", "evaluate.pose_weights")):
                weights.resolve(name, param, allow_download=False)
                settings[param] = name
    except (ImportError, FileNotFoundError):
        settings = {}
    if "loss.vgg_weights" not in settings and VGG.is_file():
        settings["loss.vgg_weights"] = str(VGG)
    if "evaluate.pose_weights" not in settings:
        settings["evaluate.pose_weights"] = str(YOLO) if YOLO.is_file() else None
    if "loss.vgg_weights" in settings:
        settings["loss.nn_weight"] = 0.01
    else:
        settings.update({"loss.nn_weight": 0.0, "loss.l1_weight": 1.0})
    return settings


def tiny_settings() -> dict:
    return {
        "image.height": 64,
        "image.width": 32,
        "data.synthetic.train_ids": 3,
        "data.synthetic.test_ids": 2,
        "data.synthetic.images_per_id": 3,
        "heatmaps.sigma": 3.0,
        "model.encoder_widths": [8, 8, 16, 16, 16, 16],
        "model.decoder_widths": [16, 16, 16, 8, 8],
        "model.disc_widths": [8, 16, 16],  # three levels: the original head needs 64 x 32
        "train.steps": 3,
        "train.batch_size": 2,
        "train.num_workers": 0,
        "train.checkpoint_every": 2,
        "train.log_every": 1,
        "train.sample_every": 3,
        "train.val_every": 2,
        "train.val_pairs": 4,
        "evaluate.batch_size": 4,
        "evaluate.grid_pairs": 2,
        "evaluate.download": False,  # tests never fetch weights, even on a machine online
        "evaluate.inception_weights": None,
        "evaluate.lpips_weights": None,
        **weight_settings(),
    }


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


def wait_for_queue(proj, timeout_s: float = 420) -> str:
    """Poll `dvc queue status` until no task is queued or running; returns the last status."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = dvc("queue", "status", cwd=proj).stdout
        busy = [ln for ln in status.splitlines() if any(w in ln for w in ("Queued", "Running"))]
        if not busy:
            return status
        if time.monotonic() > deadline:
            dvc("queue", "kill", *[ln.split()[0] for ln in busy], cwd=proj, check=False)
            pytest.fail(f"queued experiments still busy after {timeout_s:.0f} s:\n{status}")
        time.sleep(3)


def test_repro_then_queued_experiments_show_in_dvc_and_mlflow(tmp_path):
    settings = tiny_settings()
    proj = make_project(tmp_path / "proj", settings)
    first = dvc("repro", cwd=proj)
    assert stages_run(first.stdout) == ["download", "pose", "heatmaps", "pairs", "train", "evaluate"]
    assert (proj / "models" / "generator.pt").is_file()
    # The metrics file: the model's numbers only; the rest (baselines, reasons) in the details.
    metrics = json.loads((proj / "metrics" / "eval.json").read_text())
    assert metrics["pairs"] > 0 and 0.0 <= metrics["ssim"] <= 1.0 and metrics["masked_l1"] > 0
    assert all(isinstance(v, (int, float)) for v in metrics.values())
    details = json.loads((proj / "metrics" / "eval_details.json").read_text())
    assert 0.0 <= details["copy_source"]["ssim"] <= 1.0 and details["model"]["fid_reason"]
    assert details["notes"]["checkpoint"] == "last"
    assert (proj / "data" / "evaluation" / "grid.png").is_file()

    client, runs = mlflow_runs(proj)
    assert len(runs) == 1
    run = runs[0]
    assert "eval/model/ssim" in run.data.metrics and "loss/g_total" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/grid.png" in artifacts
    # A plain `dvc repro` run is named after the commit; the stages' outputs and dvc.lock,
    # written before training starts, do not count as changes.
    assert run.info.run_name == run.data.tags["git_revision"][:7] and run.data.tags["git_dirty"] == "False"
    # The README's one commit after the quickstart: the baseline experiments compare with.
    git_run(["git", "add", "dvc.lock", "metrics", "params.yaml"], proj)
    git_run(["git", "commit", "-q", "-m", "quickstart baseline"], proj)

    # Two experiments queued, run two at a time, each in its own copy of the repo: the data
    # stages come back from DVC's run cache, train and evaluate rerun.
    key = "loss.nn_weight" if "loss.vgg_weights" in settings else "loss.l1_weight"
    values = ("0.005", "0.05")
    for value in values:
        dvc("exp", "run", "--queue", "-S", f"{key}={value}", cwd=proj)
    try:
        dvc("queue", "start", "-j", "2", cwd=proj)
        status = wait_for_queue(proj)
    finally:
        dvc("queue", "stop", cwd=proj, check=False)
    done = [ln.split() for ln in status.splitlines() if "Success" in ln]
    assert len(done) == 2, status
    for task in done:
        logs = dvc("queue", "logs", task[0], cwd=proj).stdout
        assert stages_run(logs) == ["train", "evaluate"], logs[-2000:]

    shown = json.loads(dvc("exp", "show", "--json", cwd=proj).stdout)
    text = json.dumps(shown)
    assert all(value in text for value in values)
    evals = [s for s in find(shown, "metrics/eval.json") if isinstance(s, dict) and "data" in s]
    assert len(evals) >= 3 and all("ssim" in s["data"] for s in evals)  # workspace + 2 experiments

    _, runs = mlflow_runs(proj)
    by_value = {r.data.params.get(key): r for r in runs}
    names = {task[1] for task in done}
    assert set(values) <= set(by_value)
    for value in values:
        run = by_value[value]
        assert run.info.run_name in names  # named after its DVC experiment
        assert run.data.tags["dvc_exp_name"] == run.info.run_name
        assert "eval/model/ssim" in run.data.metrics
        curve = client.get_metric_history(run.info.run_id, "val/mask_ssim")
        assert [m.step for m in curve] == [2, 3], value  # every train.val_every steps and at the end

    # The evaluation's share of `dvc metrics show` fits a 160-column terminal with room for
    # the other stages' metrics (printed for a look: -s).
    out = dvc("metrics", "show", "metrics/eval.json", cwd=proj, env={"COLUMNS": "160"}).stdout
    assert max(map(len, out.splitlines())) <= 110, out
    for args in (("metrics", "show"), ("exp", "show", "--only-changed", "--no-pager")):
        print(f"$ COLUMNS=160 dvc {' '.join(args)}\n{dvc(*args, cwd=proj, env={'COLUMNS': '160'}).stdout}")
    # The README's comparison: against the committed baseline, without the dependency
    # hashes, the changed param and the metrics fit a 160-column terminal.
    table = dvc("exp", "show", "--only-changed", "--no-pager", "--drop", EXP_SHOW_DROP,
                cwd=proj, env={"COLUMNS": "160"}).stdout
    print(table)
    assert max(map(len, table.splitlines())) <= 160, table
    assert key.split(".")[-1] in table and "ssim" in table, table
