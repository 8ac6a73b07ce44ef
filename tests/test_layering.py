"""The import graph reads configs -> protocols -> toyworld -> backbones -> measures -> train ->
evaluate -> benchmarks -> dashboards: a package imports only packages to its left (or itself),
including imports inside functions. tests/ sits on top and may import anything."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["configs", "protocols", "toyworld", "backbones", "measures", "train", "evaluate", "benchmarks", "dashboards"]
RANK = {name: i for i, name in enumerate(LAYERS)}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in RANK or top == "tests":
                out.add((top, node.lineno))
    return out


def test_every_package_is_layered():
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert on_disk <= set(LAYERS), f"packages without a layer: {sorted(on_disk - set(LAYERS))}"


def test_no_import_points_up():
    back_edges = []
    for pkg in LAYERS:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for top, line in imported_packages(path):
                if top == "tests" or RANK[top] > RANK[pkg]:
                    back_edges.append(f"{path.relative_to(ROOT)}:{line} imports {top}")
    assert not back_edges, "imports against the layering:\n" + "\n".join(back_edges)
