"""pipeline.core.tracking: URI resolution and a real MLflow run (tmp sqlite) from a tiny training."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pipeline.model.checkpoint import load_generator
from pipeline.core.config import TrackingConfig
from pipeline.core.tracking import (DB_NAME, EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, project_root, resume_run, run_name,
                               start_run, tracking_uri)
from pipeline.train.training import train
from support.tiny_data import build_tiny_data, tiny_params

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
    paths = dataclasses.replace(paths, train_validation=str(tmp_path / "validation.csv"))  # not in the cwd
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

    assert "run_id" not in json.loads(Path(paths.train_metrics).read_text())  # a string: MLflow's
    _, meta = load_generator(Path(paths.models) / "generator.pt")
    assert meta["run_id"] == result.run_id

    with resume_run(meta["run_id"], uri) as tracker:  # what the evaluate stage does
        tracker.log_metrics({"eval/ssim": 0.5})
    run = client.get_run(result.run_id)
    assert run.data.metrics["eval/ssim"] == 0.5 and run.info.status == "FINISHED"


def _git(repo: Path, *args: str) -> str:
    import subprocess

    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def test_run_name_is_the_experiment_else_the_revision_marked_dirty(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    repo = tmp_path / "repo"
    (repo / "metrics").mkdir(parents=True)
    (repo / "code.py").write_text("x = 1\n")
    (repo / "metrics" / "eval.json").write_text("{}\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "one")
    short = _git(repo, "rev-parse", "--short=7", "HEAD")
    assert len(short) == 7 and run_name(repo) == short
    # The pipeline's own outputs and DVC's lock file do not make the tree dirty...
    (repo / "metrics" / "eval.json").write_text('{"ssim": 0.5}\n')
    (repo / "dvc.lock").write_text("schema: '2.0'\n")
    assert run_name(repo, ignore=["metrics/eval.json"]) == short
    assert run_name(repo) == f"{short}-dirty"  # unless not declared as outputs
    # ...code changes do, tracked or new.
    (repo / "code.py").write_text("x = 2\n")
    assert run_name(repo, ignore=["metrics/eval.json"]) == f"{short}-dirty"
    _git(repo, "checkout", "-q", "code.py")
    (repo / "new.py").write_text("y = 1\n")
    assert run_name(repo, ignore=["metrics/eval.json"]) == f"{short}-dirty"
    monkeypatch.setenv("DVC_EXP_NAME", "bushy-lots")  # inside `dvc exp run`
    assert run_name(repo) == "bushy-lots"
    monkeypatch.delenv("DVC_EXP_NAME")
    (tmp_path / "plain").mkdir()
    assert run_name(tmp_path / "plain") is None  # no git: MLflow names the run


def test_experiment_opens_on_the_model_training_view(tmp_path, monkeypatch):
    """MLflow 3's UI lands on the traces overview unless the experiment's kind tag says
    custom model development: set on creation, added to an older experiment, a kind chosen
    in the UI kept."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    old = client.create_experiment("old")  # made before the tag existed
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    for name in ("new", "old", "chosen"):
        with start_run(TrackingConfig(uri=uri, experiment=name), name=f"run-{name}") as tracker:
            assert client.get_run(tracker.run_id).info.run_name == f"run-{name}"
    kinds = {e.name: e.tags.get(EXPERIMENT_KIND_TAG) for e in client.search_experiments()}
    assert EXPERIMENT_KIND == "custom_model_development"
    assert kinds["new"] == kinds["old"] == EXPERIMENT_KIND and kinds["chosen"] == "genai_development"
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_an_unusable_store_or_a_failing_write_never_stops_the_caller(tmp_path, capsys, monkeypatch):
    """Tracking is optional: a store MLflow refuses (its file store is in maintenance mode
    in 3.x) gives an untracked run, and a write that fails mid-run (here ENOSPC injected
    into the client's batch call) is reported once and tracking stops; neither raises."""
    import errno

    from mlflow.tracking import MlflowClient

    with start_run(TrackingConfig(uri=f"file://{tmp_path / 'mlruns'}", experiment="x")) as tracker:
        assert not tracker.active and tracker.run_id is None
        tracker.log_metrics({"a": 1.0})
    err = capsys.readouterr().err
    assert err.count("tracking: warning: opening an MLflow run") == 1 and "Traceback" not in err

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with start_run(TrackingConfig(uri=uri, experiment="x"), name="full-disk") as tracker:
        run_id = tracker.run_id
        tracker.log_metrics({"loss": 1.0}, step=1)

        def no_space(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(MlflowClient, "log_batch", no_space)
        for step in (2, 3):
            tracker.log_metrics({"loss": 0.5}, step=step)
        assert not tracker.active
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert err.count("No space left on device") == 1
    history = MlflowClient(uri).get_metric_history(run_id, "loss")
    assert [m.step for m in history] == [1]  # what was logged before the failure stays
