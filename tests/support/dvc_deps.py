"""What each dvc.yaml stage must list as code deps: the files its command imports,
directly or not (an empty package __init__ runs no code and is left out).

`python tests/support/dvc_deps.py` rewrites the code deps (pipeline/, stages/, app/ lines)
of every stage in dvc.yaml: a listed folder that still covers an imported file stays, a
file no longer imported goes, a missing file is added; comments and other deps stay.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support.imports import ROOT, closure, module_file  # noqa: E402

CODE = re.compile(r"^(\s+)- (pipeline|stages|app)/\S+\s*$")


def code_deps(cmd: str) -> list[str]:
    """Sorted project files that `python -m <module>` imports."""
    parts = cmd.split()
    if parts[:2] != ["python", "-m"] or module_file(parts[2]) is None:
        raise ValueError(f"cmd should be `python -m <our module>`: {cmd!r}")
    files = closure(module_file(parts[2]))
    return sorted(p.relative_to(ROOT).as_posix() for p in files
                  if p.name != "__init__.py" or p.read_text().strip())


def covered(rel: str, deps) -> bool:
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


def stage_code_deps(cmd: str, listed: list[str]) -> list[str]:
    """The listed folders still needed plus every needed file they do not cover."""
    needed = code_deps(cmd)
    folders = [d for d in listed if (ROOT / d).is_dir() and any(covered(n, [d]) for n in needed)]
    return sorted(folders + [n for n in needed if not covered(n, folders)])


def rewrite(text: str) -> str:
    """dvc.yaml text with each stage's code deps made exact (see the module doc)."""
    stages = yaml.safe_load(text)["stages"]
    out, stage, in_deps, written = [], None, False, False
    for line in text.splitlines():
        m = re.match(r"^  (\w[\w-]*):\s*$", line)
        if m and m.group(1) in stages:
            stage, in_deps = m.group(1), False
        if re.match(r"^    deps:\s*$", line) and stage:
            out.append(line)
            listed = [d for d in stages[stage].get("deps", []) if CODE.match(f"      - {d}")]
            out.extend(f"      - {d}" for d in stage_code_deps(stages[stage]["cmd"], listed))
            in_deps, written = True, True
            continue
        if in_deps and CODE.match(line):
            continue
        if in_deps and re.match(r"^    \w", line):
            in_deps = False
        out.append(line)
    assert written, "no deps blocks found"
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    path = ROOT / "dvc.yaml"
    path.write_text(rewrite(path.read_text()))
