"""pipeline.tracking: URI resolution and a real MLflow run (tmp sqlite) from a tiny training."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pipeline.checkpoint import load_generator
from pipeline.config import TrackingConfig
from pipeline.tracking import DB_NAME, project_root, resume_run, tracking_uri
from pipeline.training import train
from test_data import build_tiny_data, tiny_params

pytestmark = pytest.mark.usefixtures("one_thread")



def test_tracking_uri_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("MLFLOW_TRACKING_URI", "DVC_ROOT"):
        monkeypatch.delenv(key, raising=False)
    project = tmp_path / "project"
    (project / "sub" / "deeper").mkdir(parents=True)
    (project / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(project / "sub" / "deeper")
    assert project_root() == project
    assert tracking_uri() == f"sqlite:///{project / DB_NAME}"
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "exp-root"))  # dvc exp run's temp workspace
    assert tracking_uri() == f"sqlite:///{(tmp_path / 'exp-root').resolve() / DB_NAME}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking_uri() == "http://mlflow.example:5000"
    assert tracking_uri("sqlite:///x.db") == "sqlite:///x.db"  # the param wins
    monkeypatch.delenv("DVC_ROOT")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    lone = tmp_path / "lone"
    lone.mkdir()
    monkeypatch.chdir(lone)
    assert project_root() == lone.resolve()  # no dvc.yaml / .git above: the cwd


def test_training_logs_a_real_mlflow_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("DVC_EXP_NAME", "tiny-exp")
    paths = build_tiny_data(tmp_path / "data")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = tiny_params(steps=4, checkpoint_every=2, log_every=2, sample_every=2)
    params = dataclasses.replace(params, tracking=TrackingConfig(uri=uri, experiment="tests"))

    cut = train(params, paths, progress=False, stop_after=2)
    result = train(params, paths, progress=False)  # resumes into the same MLflow run
    assert result.run_id == cut.run_id is not None

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(result.run_id)
    assert run.info.run_name == "tiny-exp" and run.info.status == "FINISHED"
    assert run.data.params["train.steps"] == "4" and run.data.params["model.warp"] == "parts"
    assert run.data.params["model.encoder_widths"] == "[8, 16, 16, 32, 32, 32]"
    history = client.get_metric_history(result.run_id, "loss/g_l1")
    assert [m.step for m in history] == [2, 4]
    assert history[-1].value == pytest.approx(sum(result.history["g_l1"][2:4]) / 2)
    assert "images_per_sec" in run.data.metrics
    samples = [a.path for a in client.list_artifacts(result.run_id, "samples")]
    assert samples == ["samples/step_0000002.png", "samples/step_0000004.png"]
    artifacts_dir = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifacts_dir.is_relative_to(tmp_path)  # beside the DB, not in the cwd

    assert json.loads(Path(paths.train_metrics).read_text())["run_id"] == result.run_id
    _, meta = load_generator(Path(paths.models) / "generator.pt")
    assert meta["run_id"] == result.run_id

    with resume_run(meta["run_id"], uri) as tracker:  # what the evaluate stage does
        tracker.log_metrics({"eval/ssim": 0.5})
    run = client.get_run(result.run_id)
    assert run.data.metrics["eval/ssim"] == 0.5 and run.info.status == "FINISHED"
