"""The layout of `sweeps` as law (docs/architecture.md "Layout"): imports go one way, down the
floors below, and the MLflow store's schema is written in one place (`sweeps.store.schema`).

Every module under sweeps/ is parsed with `ast` (no module is imported): every import counts,
also those inside functions, and a relative import is resolved to the module it names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sweeps"

# Floors, low to high: a module may import its own floor or lower ones, never a higher one.
FLOORS: dict[str, int] = {
    "sweeps": 0, "sweeps.errors": 0, "sweeps.textout": 0, "sweeps.plugins": 0,
    "sweeps.store": 1,
    "sweeps.tasks": 2,
    "sweeps.models": 3,
    "sweeps.config": 4,
    "sweeps.trial": 5,
    "sweeps.report": 6,
    "sweeps.driver": 7,
    "sweeps.preview": 8,
    "sweeps.cli": 9,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def floor(module: str) -> int:
    """The floor of a module of `sweeps`: its longest prefix in FLOORS.

    Raises:
        KeyError: a module no floor names (a new top-level room needs its floor here).
    """
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in FLOORS and (i > 1 or module == "sweeps"):
            return FLOORS[prefix]
    raise KeyError(f"{module}: no floor (add it to FLOORS in tests/test_architecture.py and to docs/architecture.md)")


def imported_modules(path: Path, name: str | None = None) -> list[tuple[int, str]]:
    """(line, module) of every `sweeps` module `path` imports, anywhere in the file; `name` is the
    module's dotted name (default: from its place under the repository)."""
    name = name or _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "sweeps"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "sweeps":
                continue
            for alias in node.names:  # `from sweeps.store import paths`: the submodule is what is used
                sub = f"{source}.{alias.name}"
                out.append((node.lineno, sub if sub in MODULES else source))
    return out


def test_every_module_has_a_floor() -> None:
    assert len(MODULES) > 50
    for module in MODULES:
        floor(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_floors(module: str) -> None:
    own = floor(module)
    above = [f"line {line}: {target} (floor {floor(target)})" for line, target in imported_modules(MODULES[module])
             if floor(target) > own]
    assert not above, f"{module} (floor {own}) imports a higher floor: " + "; ".join(above)


def test_the_checker_sees_imports_inside_functions_and_relative_ones(tmp_path: Path) -> None:
    """The parser itself: a lazy import inside a function and a relative import are both found."""
    html = imported_modules(MODULES["sweeps.report.html"])
    assert (any(t == "sweeps.report.hints" for _, t in html)
            and all(floor(t) <= 6 for _, t in html))
    lazy = [t for _, t in imported_modules(MODULES["sweeps.driver.service"])]
    assert "sweeps.report.status" in lazy  # imported inside sweep_status()
    probe = tmp_path / "probe.py"  # read as if it were sweeps/store/probe.py
    probe.write_text("def f():\n    from ..driver import tuner\n    from . import paths\n")
    found = [t for _, t in imported_modules(probe, "sweeps.store.probe")]
    assert found == ["sweeps.driver.tuner", "sweeps.store.paths"]
    assert floor(found[0]) > floor("sweeps.store.probe")


# -- the store schema is the one copy of the tag names ------------------------------------------
SCHEMA = PACKAGE / "store" / "schema.py"
# Names that are also ordinary words of other things (a Tune result key, a DataFrame column, a spec
# field path): a literal of them elsewhere is not necessarily a tag.
SHARED_WORDS = {"seed", "loss", "psi", "status", "node", "trial_id", "restarts", "search_space",
                "metric.name", "metric.mode", "ray.address"}


def schema_tag_names() -> dict[str, str]:
    """Constant name -> value of the tag (and tag-or-param) names `sweeps.store.schema` defines."""
    out = {}
    for node in ast.parse(SCHEMA.read_text(encoding="utf-8")).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id.endswith(("_TAG", "_KEY")) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            out[node.targets[0].id] = node.value.value
    return out


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def tag_literals(path: Path, names: set[str]) -> list[str]:
    """`line: text` of each string literal in `path` (docstrings aside) that spells a tag name:
    the name itself, its trial-table column `tags.<name>`, or the name in backquotes (an MLflow
    filter such as ``tags.`slsweep.kind` = 'sweep'``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip = _docstrings(tree)
    hits = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in skip:
            continue
        text = node.value
        for name in names:
            if text in (name, f"tags.{name}") or f"`{name}`" in text:
                hits.append(f"{node.lineno}: {text!r}")
    return hits


def test_schema_defines_the_tag_names() -> None:
    tags = schema_tag_names()
    assert {"KIND_TAG", "SWEEP_ID_TAG", "STOP_REASON_TAG", "ARM_TAG", "LAST_STEP_TAG", "PARENT_TAG",
            "CONFIRMS_TAG", "CONFIRMED_BY_TAG", "EXPERIMENT_KIND_TAG"} <= set(tags)
    assert len(set(tags.values())) == len(tags)  # no name defined twice
    from sweeps.store import schema

    assert {k: getattr(schema, k) for k in tags} == tags


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "sweeps.store.schema"))
def test_no_tag_name_is_spelled_outside_the_schema(module: str) -> None:
    names = set(schema_tag_names().values()) - SHARED_WORDS
    hits = tag_literals(MODULES[module], names)
    assert not hits, f"{module} spells tag names of sweeps.store.schema itself (import the constant): {hits}"


def test_the_literal_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text('"""Docs may say slsweep.kind and `slsweep.kind`."""\n'
                     'A = "slsweep.kind"\nB = "tags.slsweep.arm"\nC = f"tags.`slsweep.sweep_id` = {x}"\n'
                     'D = "slsweep.kinds are many"\n')
    hits = tag_literals(probe, {"slsweep.kind", "slsweep.arm", "slsweep.sweep_id"})
    assert [h.split(":")[0] for h in hits] == ["2", "3", "4"]
