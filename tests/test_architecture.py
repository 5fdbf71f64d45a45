"""The package's shape: imports only run down the data flow, and functions fit in a head.

Every ``import``/``from`` of a lungaudit module anywhere in a file (also inside functions, where lazy
imports hide) is checked against the layer table: a module may import its own layer and the layers
below it, never one above. ``training`` and ``audit`` sit side by side and may not import each other:
training writes runs, the audit reads them through the run layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lungaudit"

# top-level module or subpackage -> layer (lower = closer to the raw data)
LAYERS: dict[str, int] = {
    "config": 0, "registry": 0, "utils": 0, "device": 0, "distributed": 0, "configs": 0, "__main__": 9,
    "data": 1,
    "segmentation": 2,
    "classification": 3,
    "explain": 4,
    "runs": 5,
    "audit": 6, "training": 6,
    "report": 7, "studies": 7,
    "api": 8, "services": 8,
    "cli": 9,
}  # fmt: skip
SIDE_BY_SIDE = {("audit", "training"), ("training", "audit")}
MAX_LINES = 80


def _top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "lungaudit" and len(parts) > 1 else None


def _imports(tree: ast.AST, self_module: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = self_module.split(".")[: -node.level]
                found.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
            elif node.module:
                found.append((node.lineno, node.module))
                found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names if node.module == "lungaudit"]
    return found


def _modules() -> list[tuple[Path, str]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((path, ".".join(parts)))
    return out


def test_every_module_has_a_layer():
    unknown = sorted({_top(m) for _, m in _modules() if _top(m) and _top(m) not in LAYERS})
    assert not unknown, f"assign these to a layer in tests/test_architecture.py: {unknown}"


@pytest.mark.parametrize("path,module", [pytest.param(p, m, id=m) for p, m in _modules() if _top(m)])
def test_imports_run_down_the_data_flow(path: Path, module: str):
    me = _top(module)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = []
    for line, target in _imports(tree, module):
        other = _top(target)
        if other is None or other == me or other not in LAYERS or me not in LAYERS:
            continue
        if LAYERS[other] > LAYERS[me] or (me, other) in SIDE_BY_SIDE:
            bad.append(f"line {line}: {target}")
    assert not bad, f"{module} ({me}, layer {LAYERS.get(me)}) imports upward: {bad}"


def test_stages_never_import_training_or_above():
    """The acceptance point of issue 9, spelled out: no stage reaches up into training or the CLI."""
    stages = ("data", "segmentation", "classification", "explain", "audit")
    offenders = []
    for path, module in _modules():
        if _top(module) in stages:
            for line, target in _imports(ast.parse(path.read_text(encoding="utf-8")), module):
                if _top(target) in ("training", "report", "api", "services", "cli"):
                    offenders.append(f"{module}:{line} -> {target}")
    assert not offenders


def _long_functions() -> list[str]:
    out = []
    for path, module in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                doc = ast.get_docstring(node) or ""
                if n > MAX_LINES and "Long because" not in doc:
                    out.append(f"{module}.{node.name} ({n} lines)")
    return out


def test_functions_fit_in_a_head():
    """No function over 80 lines unless its docstring says why ("Long because ...")."""
    assert not _long_functions()
