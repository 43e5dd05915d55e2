"""The project's own import graph, read from the source with ast (nothing is imported).

Both the layer test and the dvc-deps test use it: every `import pipeline...` and
`from pipeline... import ...`, at module level or inside a function, is an edge.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def module_name(path: Path) -> str:
    """pipeline/data/pose.py -> pipeline.data.pose; a package's __init__ -> the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_file(name: str) -> Path | None:
    """The file of a module name, or None when it is not one of ours."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=None)
def imports_of(path: Path) -> frozenset[str]:
    """Our modules that `path` imports (a `from pkg import mod` counts as pkg.mod when
    mod is a module, else as pkg)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [n if module_file(n) else node.module for n in names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in ("pipeline", "stages", "app")
                     and module_file(n))
    return frozenset(found)


def closure(path: Path) -> set[Path]:
    """Every file of ours that importing `path` reaches, `path` and the packages'
    __init__ files included."""
    seen: set[Path] = set()
    todo = [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in imports_of(current):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b too
                f = module_file(".".join(parts[:i]))
                if f is not None:
                    todo.append(f)
    return seen
