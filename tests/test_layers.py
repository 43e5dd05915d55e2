"""The library's layers: no import cycle, and no import from a lower layer up to a higher one.

core < datasets < data < model < metrics < eval < train, infer (train and infer are peers
that never import each other); stages/ and app/ sit on top and nothing in pipeline/ imports
them. A new module that breaks this fails here with the offending import named.
"""
from __future__ import annotations

from pathlib import Path

from support.imports import ROOT, imports_of, module_file, module_name

LAYERS = {"core": 0, "datasets": 1, "data": 2, "model": 3, "metrics": 4, "eval": 5,
          "train": 6, "infer": 6}


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "pipeline" and len(parts) > 1 else None


def test_every_pipeline_package_has_a_layer():
    packages = {p.name for p in (ROOT / "pipeline").iterdir()
                if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == set(LAYERS), f"give each pipeline package a layer: {packages ^ set(LAYERS)}"
    loose = [p.name for p in (ROOT / "pipeline").glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside a layer: {loose}"


def test_no_upward_or_sideways_import():
    bad = []
    for path in _files("pipeline"):
        here = _layer(module_name(path))
        for target in imports_of(path):
            there = _layer(target)
            if target.split(".")[0] != "pipeline":
                bad.append(f"{module_name(path)} imports {target} (pipeline/ never imports stages/ or app/)")
            elif here and there and here != there and LAYERS[there] >= LAYERS[here]:
                bad.append(f"{module_name(path)} ({here}) imports {target} ({there})")
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    files = _files("pipeline") + _files("stages") + _files("app")
    graph = {module_name(f): sorted(t for t in imports_of(f) if module_file(t)) for f in files}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # a package __init__ importing its own modules is not a cycle of ideas
    cycles = [c for c in cycles if not all(m.startswith(c[0] + ".") or m == c[0] for m in c)]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
