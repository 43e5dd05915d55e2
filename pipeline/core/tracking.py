"""MLflow experiment tracking (every MLflow call of the project lives here).

Where runs go: `tracking.uri` from params, else $MLFLOW_TRACKING_URI, else
sqlite:///<root>/mlflow.db with artifacts in <root>/mlartifacts, where root is $DVC_ROOT
(set by `dvc exp run`, which works in a temporary copy of the repo) or the project root
(the nearest folder holding dvc.yaml, else .git) above the working directory, else the
working directory itself.

A run is named after what it is: $DVC_EXP_NAME inside `dvc exp run` (DVC sets it), else the
git short revision, with "-dirty" when code or params differ from that commit (the files the
pipeline itself writes do not count). The experiment carries MLflow 3's kind tag
(mlflow.experimentKind = custom_model_development), so the UI opens it on the runs /
model-training view rather than the GenAI traces overview where the UI honours it; MLflow
3.17's UI decides by the `workflowType` URL query instead, so ui_url() gives that address. Logging goes through a Tracker bound
to one run id through an explicit MlflowClient (no global "active run"), so the training
stage can record the id and the evaluate stage can reopen the same run with resume_run().
MLflow is imported lazily, inside functions, to keep `import pipeline.train.training` light.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from mlflow.tracking import MlflowClient

    from pipeline.core.config import Params, TrackingConfig

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
MAX_PARAM_CHARS = 6000  # MLflow's limit for one param value
MAX_TAG_CHARS = 8000  # MLflow's limit for one tag value
# MLflow 3's UI reads this experiment tag to choose the experiment's landing view; the
# values are in its JS bundle (the Python package only sets "genai_development", for its demo).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # "Machine learning": the runs / training view
DVC_WRITES = ("dvc.lock", ".dvc")
# `mlflow ui`'s address, and the URL query that opens an experiment on its runs table: MLflow
# 3.17's UI takes the "GenAI / Model training" view from `workflowType` in the URL, else from
# the browser's local storage (default: GenAI), not from the experiment's kind tag.
UI_BASE = "http://127.0.0.1:5000"
UI_VIEW = "workflowType=machine_learning"  # rewritten by DVC itself during `dvc repro`


def project_root(start: str | Path | None = None) -> Path:
    """$DVC_ROOT, else the nearest ancestor of `start` (default cwd) with dvc.yaml, else
    with .git, else `start` itself."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    start = Path(start or os.getcwd()).resolve()
    for marker in ("dvc.yaml", ".git"):
        for folder in (start, *start.parents):
            if (folder / marker).exists():
                return folder
    return start


def tracking_uri(uri: str | None = None, start: str | Path | None = None) -> str:
    """Resolve the tracking URI (see the module docstring for the order)."""
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{project_root(start) / DB_NAME}"


def _default_artifact_location(uri: str) -> str | None:
    """Artifacts beside a local sqlite DB (MLflow would otherwise use ./mlruns of the cwd,
    which for `dvc exp run` is a throw-away temp folder)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / ARTIFACTS_DIR).resolve().as_uri()
    return None


def _git(args: list[str], root: str | Path | None) -> str | None:
    """stdout of `git <args>` at `root` (default: project root), or None when git fails."""
    try:
        out = subprocess.run(
            ["git", *args], cwd=root or project_root(), capture_output=True,
            text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_revision(root: str | Path | None = None) -> str | None:
    """HEAD commit of the repository at `root` (default: project root), or None."""
    rev = (_git(["rev-parse", "HEAD"], root) or "").strip()
    return rev or None


def git_dirty(root: str | Path | None = None, ignore: Sequence[str] = ()) -> bool | None:
    """Whether the work tree differs from HEAD (tracked changes or untracked, not ignored,
    files), leaving out dvc.lock, .dvc/ and the `ignore` paths (the pipeline's own outputs,
    which `dvc repro` rewrites as it goes). None when git cannot tell."""
    excludes = [f":(exclude){p}" for p in (*DVC_WRITES, *ignore) if p]
    out = _git(["status", "--porcelain", "--", ".", *excludes], root)
    return None if out is None else bool(out.strip())


def run_name(root: str | Path | None = None, ignore: Sequence[str] = ()) -> str | None:
    """$DVC_EXP_NAME, else the git short revision (+ "-dirty"), else None (MLflow picks one)."""
    if os.environ.get("DVC_EXP_NAME"):
        return os.environ["DVC_EXP_NAME"]
    short = (_git(["rev-parse", "--short=7", "HEAD"], root) or "").strip()
    if not short:
        return None
    return f"{short}-dirty" if git_dirty(root, ignore) else short


def tracking_failed(exc: BaseException, what: str = "MLflow logging") -> None:
    """One warning line: tracking is optional, so the stage goes on and writes its results."""
    import sys

    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    print(f"tracking: warning: {what} failed, continuing without it ({type(exc).__name__}: "
          f"{first[:300]})", file=sys.stderr)


def _optional(method):
    """A Tracker method that never raises: the first failure is reported once and the
    tracker goes inactive (a full disk or a lost server must not stop training)."""
    import functools

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        if not self.active:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any backend error
            self.failed = True
            tracking_failed(exc)
            return None

    return guarded


def _param_value(value: Any) -> str:
    text = str(list(value)) if isinstance(value, (list, tuple)) else str(value)
    return text[:MAX_PARAM_CHARS]


class Tracker:
    """Logging into one MLflow run. All methods are cheap no-ops on a NullTracker."""

    def __init__(self, client: "MlflowClient", run_id: str):
        self.client = client
        self.run_id: str | None = run_id
        self.failed = False

    @property
    def active(self) -> bool:
        return not self.failed

    @_optional
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log flat params (values stringified; None becomes 'None')."""
        from mlflow.entities import Param

        items = [Param(str(k), _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100], synchronous=True)

    @_optional
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log scalar metrics (non-finite values are skipped; MLflow rejects some of them)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(str(k), float(v), now, int(step or 0))
            for k, v in metrics.items()
            if v is not None and np.isfinite(float(v))
        ]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000], synchronous=True)

    @_optional
    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags in one batch (None values skipped, long values cut to MLflow's limit)."""
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)[:MAX_TAG_CHARS]) for k, v in tags.items() if v is not None]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, tags=items[i : i + 100], synchronous=True)

    @_optional
    def log_image(self, image: np.ndarray, artifact_file: str) -> None:
        """Log a uint8 [H, W, 3] RGB image as an artifact, e.g. 'samples/step_0001000.png'."""
        self.client.log_image(self.run_id, np.ascontiguousarray(image), artifact_file=artifact_file)

    @_optional
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)


class NullTracker(Tracker):
    """Tracker that records nothing (tracking disabled, or a non-zero DDP rank)."""

    def __init__(self) -> None:  # noqa: D107 - no client on purpose
        self.client = None  # type: ignore[assignment]
        self.run_id = None
        self.failed = False

    @property
    def active(self) -> bool:
        return False

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_image(self, image: np.ndarray, artifact_file: str) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass


def _client(uri: str) -> "MlflowClient":
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client: "MlflowClient", name: str, uri: str) -> str:
    """Id of the experiment `name`, created when missing, with its kind tag set (also on an
    experiment created before the tag existed; a kind someone chose in the UI is kept)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=_default_artifact_location(uri),
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except Exception:  # another process created it meanwhile
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if EXPERIMENT_KIND_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def ui_url(experiment_id: str, run_id: str | None = None, base: str = UI_BASE) -> str:
    """The MLflow UI page of an experiment's runs table (or of one run), model-training view."""
    page = f"#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{base.rstrip('/')}/{page}?{UI_VIEW}"


def run_ui_url(run_id: str, uri: str | None = None, base: str = UI_BASE) -> str:
    """ui_url of the experiment that holds `run_id` (its runs table, where runs compare)."""
    return ui_url(_client(tracking_uri(uri)).get_run(run_id).info.experiment_id, base=base)


def _run_exists(client: "MlflowClient", run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException:
        return False
    return True


@contextlib.contextmanager
def _running(client: "MlflowClient", run_id: str) -> Iterator[Tracker]:
    """Yield a Tracker; mark the run FINISHED on success, FAILED (then re-raise) on error.
    Marking it is tracking too: a failure there is a warning, never the stage's error."""
    status = "FAILED"
    tracker = Tracker(client, run_id)
    try:
        yield tracker
        status = "FINISHED"
    finally:
        if not tracker.failed:
            try:
                client.set_terminated(run_id, status=status)
            except Exception as exc:  # noqa: BLE001
                tracking_failed(exc, "closing the MLflow run")


def _pipeline_outputs(params: "Params | None") -> list[str]:
    """The paths section's files and folders (what the stages write), relative to the root."""
    if params is None:
        return []
    import dataclasses

    paths = (Path(getattr(params.paths, f.name)) for f in dataclasses.fields(params.paths))
    return [p.as_posix() for p in paths if not p.is_absolute() and ".." not in p.parts]


@contextlib.contextmanager
def start_run(
    cfg: "TrackingConfig",
    params: "Params | None" = None,
    run_id: str | None = None,
    enabled: bool = True,
    name: str | None = None,
) -> Iterator[Tracker]:
    """Open a run for training: a new one, or `run_id` again when resuming training.

    A new run gets the flattened params, the git revision tag and the DVC experiment name;
    it is named `name`, else after the experiment or revision (see run_name).
    With enabled=False (e.g. DDP ranks other than 0) yields a NullTracker.
    """
    if not enabled:
        yield NullTracker()
        return
    try:
        client, run_id = _open_run(cfg, params, run_id, name)
    except Exception as exc:  # noqa: BLE001 - an unusable store: go on untracked
        tracking_failed(exc, f"opening an MLflow run at {tracking_uri(cfg.uri)}")
        yield NullTracker()
        return
    with _running(client, run_id) as tracker:
        yield tracker


def _open_run(cfg: "TrackingConfig", params: "Params | None", run_id: str | None,
              name: str | None) -> tuple["MlflowClient", str]:
    """The client and the run to log into: `run_id` reopened, else a new run."""
    uri = tracking_uri(cfg.uri)
    client = _client(uri)
    if run_id is not None and not _run_exists(client, run_id):
        import warnings

        warnings.warn(f"MLflow run {run_id} not found at {uri}; starting a new run", stacklevel=3)
        run_id = None
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
    else:
        exp_id = _experiment_id(client, cfg.experiment, uri)
        exp_name = os.environ.get("DVC_EXP_NAME") or None
        rev = git_revision()
        outputs = _pipeline_outputs(params)
        tags = {"git_revision": rev, "mlflow.source.git.commit": rev, "dvc_exp_name": exp_name,
                "git_dirty": git_dirty(ignore=outputs) if rev else None}
        run = client.create_run(
            exp_id, run_name=name or run_name(ignore=outputs),
            tags={k: str(v) for k, v in tags.items() if v is not None},
        )
        run_id = run.info.run_id
        if params is not None:
            from pipeline.core.config import flatten

            Tracker(client, run_id).log_params(flatten(params))
    return client, run_id


@contextlib.contextmanager
def resume_run(run_id: str, uri: str | None = None) -> Iterator[Tracker]:
    """Reopen an existing run (e.g. the training run, from the generator's meta) to add
    metrics and artifacts, such as the evaluation results."""
    client = _client(tracking_uri(uri))
    client.update_run(run_id, status="RUNNING")  # raises when the run is not in this store
    with _running(client, run_id) as tracker:
        yield tracker
