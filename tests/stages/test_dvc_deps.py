"""dvc.yaml's deps cannot drift from the code: every file a stage's command imports (its
transitive pipeline/ imports) is covered by one of that stage's deps, so a code change
reruns every stage it affects."""
from __future__ import annotations

import pytest
import yaml

from support.imports import ROOT, closure, module_file

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _covered(path, deps) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_cover_its_imports(name):
    stage = STAGES[name]
    cmd = stage["cmd"].split()
    assert cmd[:2] == ["python", "-m"], f"{name}: cmd should be `python -m stages.<name>`"
    entry = module_file(cmd[2])
    assert entry is not None, f"{name}: {cmd[2]} not found"
    deps = [d for d in stage.get("deps", []) if not d.startswith("${")]
    # an empty package __init__ runs no code: nothing for DVC to track
    code = [p for p in closure(entry) if p.name != "__init__.py" or p.read_text().strip()]
    missing = sorted(p.relative_to(ROOT).as_posix() for p in code if not _covered(p, deps))
    assert not missing, f"dvc.yaml stage {name} misses deps: {missing}"
