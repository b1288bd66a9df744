"""Imports only point down the pipeline: no module imports a higher layer, and llm/ and baselines/ stay apart."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lit_career"
LAYERS = (
    ("__init__", "errors", "io", "benchmarks_io", "resources"),
    ("panel",),
    ("text",),
    ("synthetic",),
    ("sources", "two_stage"),
    ("llm", "baselines"),
    ("evaluation",),
    ("runs",),
    ("forecast",),
    ("cli", "__main__"),
)
"""Top-level modules and packages of lit_career, lowest layer first; a layer may import itself and below."""
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
APART = {"llm", "baselines"}
"""Same-rank packages that share only what lies below them."""


def top_name(module: str) -> str | None:
    """``llm`` for ``lit_career.llm.head``; None outside lit_career."""
    parts = module.split(".")
    return parts[1] if parts[0] == "lit_career" and len(parts) > 1 else None


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, at module level or inside functions."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if node.module == "lit_career":  # from lit_career import cli
                found += [(node.lineno, f"lit_career.{alias.name}") for alias in node.names]
    return found


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    unknown = {path.relative_to(PACKAGE).parts[0].removesuffix(".py") for path in modules()} - set(RANK)
    assert not unknown, f"add {sorted(unknown)} to LAYERS in tests/test_layers.py"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    wrong = []
    for line, module in imported_modules(ast.parse(path.read_text())):
        target = top_name(module)
        if target is None or target == own:
            continue
        if RANK[target] > RANK[own]:
            wrong.append(
                f"{path.relative_to(PACKAGE.parent)}:{line} imports {module} (layer {target} is above {own})"
            )
        elif RANK[target] == RANK[own] and {own, target} <= APART:
            wrong.append(
                f"{path.relative_to(PACKAGE.parent)}:{line} imports {module} ({own} and {target} stay apart)"
            )
    assert not wrong, "\n".join(wrong)
