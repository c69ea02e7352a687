"""The layers have no back-edges (docs/DESIGN.md, "Layers"): checked on the imports themselves."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A module of the first kind may not import any of the second (at any depth: functions too).
RULES = [
    ("app/services", ("app.api", "app.console", "app.hotpath", "flask_smorest", "webargs")),
    ("app/models", ("app.api", "app.console", "app.services", "app.hotpath")),
    ("app/schemas", ("app.api", "app.console", "app.services", "app.hotpath")),
    ("app/hotpath.py", ("app.api", "app.console")),
    ("config.py", ("app",)),
]


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, by its absolute name."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def files_of(part: str) -> list[Path]:
    """The Python files of a layer: one file, or every file under a folder."""
    target = ROOT / part
    return [target] if target.is_file() else sorted(target.rglob("*.py"))


@pytest.mark.parametrize(("layer", "forbidden"), RULES, ids=[layer for layer, _ in RULES])
def test_a_layer_imports_nothing_above_it(layer, forbidden):
    offending = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in files_of(layer)
        for name in imported_modules(path)
        if any(name == banned or name.startswith(banned + ".") for banned in forbidden)
    }
    assert not offending, sorted(offending)


def test_the_rule_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from app.api.access import caller\n    import app.hotpath\n")
    assert {"app.api.access", "app.api.access.caller", "app.hotpath"} <= imported_modules(module)
