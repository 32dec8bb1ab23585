"""Every usage example runs (issue 21, item 4).

- The `>>>` examples in sl_core's docstrings run with the standard library's doctest, one test per
  module, and every public callable of `sl_core.__all__` has one (a new public function without an
  example fails `test_every_public_callable_has_an_example`).
- Every ```python block of README.md runs as written (offline, on CPU) and checks its own result.
- Every `slsweep` command the README shows names a command of the CLI that accepts the options
  shown, and `slsweep <command> --help` exits 0 (in-process, click's CliRunner). The commands
  themselves are exercised by the CLI's own tests (e.g. tests/test_everyday_edges.py loads the README's
  `slsweep trial counting train.steps=50` config); these checks only keep the README in step.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import sl_core

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

MODULES = sorted(m.name for m in pkgutil.iter_modules(sl_core.__path__))


def _module(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"sl_core.{name}")
    except ImportError as exc:  # sl_core._triton without triton (not a Linux install)
        if exc.name == "triton":
            pytest.skip("triton is not installed")
        raise


@pytest.fixture
def registries_restored() -> Iterator[None]:
    """Examples that register a psi shape or a loss family (as a user would) leave no trace."""
    from sl_core import families, psi, registry

    saved = dict(psi._REGISTRY), dict(registry.LOSS_FAMILY_SPECS), dict(families._BUILDERS)
    try:
        yield
    finally:
        for live, old in zip((psi._REGISTRY, registry.LOSS_FAMILY_SPECS, families._BUILDERS), saved):
            live.clear()
            live.update(old)
        psi._cached_matrix.cache_clear()


# --------------------------------------------------------------------------------- sl_core docstrings

@pytest.mark.parametrize("name", MODULES)
def test_module_examples_run(name: str, registries_restored: None, capsys: pytest.CaptureFixture) -> None:
    module = _module(name)
    result = doctest.testmod(module, optionflags=FLAGS, report=False)
    report = capsys.readouterr().out  # doctest prints each failing example: expected and got
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in sl_core.{name}:\n{report}"
    if name in set(sl_core._EXPORTS.values()):
        assert result.attempted > 0, f"sl_core.{name} exports public names but has no examples"


def _public_callables() -> list[str]:
    return [n for n in sl_core.__all__ if not inspect.ismodule(getattr(sl_core, n)) and callable(getattr(sl_core, n))]


def test_public_names_are_callables_or_data() -> None:
    """What needs no example is data (a dict or tuple of constants); the callables are all checked below."""
    data = {n for n in sl_core.__all__ if not inspect.ismodule(getattr(sl_core, n))} - set(_public_callables())
    assert data and all(isinstance(getattr(sl_core, n), (dict, tuple)) for n in data), data
    assert len(_public_callables()) >= 30  # the lazy exports resolved: functions and classes alike


@pytest.mark.parametrize("name", _public_callables())
def test_every_public_callable_has_an_example(name: str) -> None:
    obj = getattr(sl_core, name)
    own_doc = obj.__doc__ if inspect.isfunction(obj) or "__doc__" in vars(obj) else None  # not a base class's
    assert own_doc and ">>>" in own_doc, f"sl_core.{name} has no `>>>` example in its docstring"
    module_name = obj.__module__.removeprefix("sl_core.")
    assert module_name in MODULES, f"sl_core.{name} is defined outside sl_core ({obj.__module__})"
    # the example is one that test_module_examples_run runs: doctest finds it in the defining module
    tests = doctest.DocTestFinder().find(importlib.import_module(obj.__module__))
    found = {t.name: len(t.examples) for t in tests}
    assert found.get(f"{obj.__module__}.{obj.__qualname__}", 0) > 0, (name, sorted(found))


# ----------------------------------------------------------------------------------- README snippets

def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.M | re.S)


def test_readme_has_an_only_the_loss_example() -> None:
    text = README.read_text(encoding="utf-8")
    assert "## Only the loss" in text
    blocks = _blocks("python")
    assert blocks, "README.md has no ```python block"
    assert any("sl_core" in b for b in blocks)


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_readme_python_block_runs(index: int, registries_restored: None) -> None:
    """Each block runs offline as written and checks its own result with an assert."""
    block = _blocks("python")[index]
    assert re.search(r"^assert ", block, flags=re.M), "a README snippet ends by asserting what it computed"
    namespace: dict[str, object] = {"__name__": f"readme_python_{index}"}
    exec(compile(block, f"README.md python block {index}", "exec"), namespace)  # noqa: S102 (our own README)
    loss = namespace.get("loss")
    if loss is not None:  # the "Only the loss" snippet: a finite scalar loss with a gradient
        import torch

        assert isinstance(loss, torch.Tensor) and loss.ndim == 0 and bool(torch.isfinite(loss))
        assert loss.item() > 0


def _readme_commands() -> list[tuple[str | None, list[str], str]]:
    """(command or None for the bare `slsweep`, the options written, the line) of each shell line."""
    out = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if not words or words[0] != "slsweep":
                continue
            command = next((w for w in words[1:] if not w.startswith("-")), None)
            options = [w.split("=", 1)[0] for w in words[1:] if w.startswith("-")]
            out.append((command, options, line.strip()))
    return out


def _cli():
    import typer.main

    from sweeps.cli import app

    return app, typer.main.get_command(app)


def test_readme_shell_commands_name_real_commands_and_options() -> None:
    _, group = _cli()
    commands = _readme_commands()
    assert len(commands) >= 15, commands  # the "Using it" block and the cluster one
    for command, options, line in commands:
        target = group if command is None else group.commands.get(command)
        assert target is not None, f"README: `{line}` names no command; commands: {sorted(group.commands)}"
        accepted = {o for p in target.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}
        accepted |= {"-h", "--help"}
        unknown = [o for o in options if o not in accepted]
        assert not unknown, f"README: `{line}`: {unknown} not options of `slsweep {command or ''}`"


def test_readme_inline_commands_are_real() -> None:
    """`slsweep resume`, `slsweep confirm …` in the prose: each names a command."""
    _, group = _cli()
    named = set(re.findall(r"`slsweep ([a-z][\w-]*)", README.read_text(encoding="utf-8")))
    assert named >= {"run", "resume", "confirm", "list"}, named
    assert named <= set(group.commands), named - set(group.commands)


@pytest.mark.parametrize("command", sorted({c or "" for c, _, _ in _readme_commands()}))
def test_readme_command_help_exits_0(command: str) -> None:
    from typer.testing import CliRunner

    app, _ = _cli()
    args = [command, "--help"] if command else ["-h"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (args, result.output, result.exception)
    assert result.output.startswith("Usage:"), result.output
