"""dvc.yaml's deps cannot drift from the code: every file a stage's command imports (its
transitive pipeline/ imports) is covered by one of that stage's deps, so a code change
reruns every stage it affects."""
from __future__ import annotations

import pytest
import yaml

from support.dvc_deps import code_deps, covered
from support.imports import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_cover_its_imports(name):
    stage = STAGES[name]
    deps = [d for d in stage.get("deps", []) if not d.startswith("${")]
    missing = [p for p in code_deps(stage["cmd"]) if not covered(p, deps)]
    assert not missing, (f"dvc.yaml stage {name} misses deps: {missing} "
                         "(`python tests/support/dvc_deps.py` writes them)")
