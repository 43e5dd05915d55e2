"""Build a throw-away git + DVC copy of this project with tiny params, for end-to-end tests."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
COPY = ("pipeline", "stages", "conf", "dvc.yaml", "params.yaml", ".dvc/config", ".dvcignore",
        ".gitignore")


# `dvc exp show --drop` pattern of the README: the dependency-hash columns (code, data, models).
# `dvc exp show --drop`: the bookkeeping columns, the load-dependent throughput and the
# dependency hashes (README, "Experiments and MLflow").
# A two-step training and an offline evaluation without weights: the settings a DVC
# end-to-end test adds to its tiny dataset and widths.
TWO_STEP_RUN: dict[str, Any] = {
    "train.steps": 2, "train.num_workers": 0, "train.checkpoint_every": 2, "train.log_every": 1,
    "train.sample_every": 2, "train.val_every": 0, "evaluate.batch_size": 4,
    "evaluate.download": False, "evaluate.inception_weights": None,
    "evaluate.lpips_weights": None, "evaluate.pose_weights": None,
}
EXP_SHOW_DROP = "Created|State|Executor|images_per_sec|^(pipeline|stages|data|models)/"


def project_env() -> dict[str, str]:
    """The venv's bin first on PATH, so DVC's `python -m stages.x` is this interpreter."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        DVC_NO_ANALYTICS="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        YOLO_OFFLINE="1",
        YOLO_AUTOINSTALL="0",
        GIT_AUTHOR_NAME="ci",
        GIT_AUTHOR_EMAIL="ci@example.invalid",
        GIT_COMMITTER_NAME="ci",
        GIT_COMMITTER_EMAIL="ci@example.invalid",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.pop("DVC_ROOT", None)
    env.pop("DVC_EXP_NAME", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run(args: list[str], cwd: Path, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command in the project; `env` adds variables (e.g. COLUMNS) to project_env()."""
    proc = subprocess.run(args, cwd=cwd, env={**project_env(), **(env or {})}, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({proc.returncode})\nstdout:\n{proc.stdout[-4000:]}\n"
            f"stderr:\n{proc.stderr[-4000:]}"
        )
    return proc


def dvc(*args: str, cwd: Path, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "dvc"
    return run([str(exe), *args], cwd, check, env)


def update_params(path: Path, changes: dict[str, Any]) -> None:
    """Set dotted keys, e.g. {'loss.nn_weight': 0.0}, in a params.yaml or a conf/ file
    (missing parents are created: conf/config.yaml holds only what it overrides)."""
    params = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def choose_groups(config: Path, groups: dict[str, str]) -> None:
    """Set the config groups (e.g. {'dataset': 'market1501', 'mode': 'paper'}) in the
    defaults list of conf/config.yaml."""
    raw = yaml.safe_load(config.read_text())
    raw["defaults"] = [{k: groups.get(k, v)} if isinstance(item, dict) else item
                       for item in raw["defaults"]
                       for k, v in (item.items() if isinstance(item, dict) else [(None, None)])]
    config.write_text(yaml.safe_dump(raw, sort_keys=False))


def make_project(dest: Path, changes: dict[str, Any], groups: dict[str, str] | None = None) -> Path:
    """Copy the project into dest, choose config groups, apply param changes, and commit it
    in a new git repo."""
    for rel in COPY:
        src = ROOT / rel
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, target)
    # The changes go into conf/ (DVC composes params.yaml from it at every `exp run -S`),
    # and params.yaml is regenerated from it as `python -m stages.params` does.
    choose_groups(dest / "conf" / "config.yaml", groups or {})
    update_params(dest / "conf" / "config.yaml", changes)
    run([sys.executable, "-m", "stages.params"], dest)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "test project"], dest)
    return dest


def stages_run(output: str) -> list[str]:
    """Names of the stages DVC says it ran, in order."""
    names = []
    for line in output.splitlines():
        if line.startswith("Running stage '"):
            names.append(line.split("'")[1])
    return names
