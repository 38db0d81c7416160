"""The core imports nothing from the sandbox: a provider is a hook, not a branch of the product.

Every module of ``pytest_eksid/`` outside ``sandbox/`` is parsed with :mod:`ast`; any import of
``pytest_eksid.sandbox`` (at the top, inside a function, relative, or through ``importlib``) fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_eksid"
SANDBOX = "pytest_eksid.sandbox"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module an ``from ... import`` names, relative forms resolved against ``module``."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _resolved(name: str, rest: list[ast.expr]) -> str:
    """``import_module('.sandbox.x', 'pytest_eksid')``: a relative name resolved against its package argument."""
    if not name.startswith(".") or not rest or not isinstance(rest[0], ast.Constant):
        return name
    level = len(name) - len(name.lstrip("."))
    base = str(rest[0].value).split(".")
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name.lstrip(".")])


def sandbox_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """``line: what`` for each import of the sandbox in ``source`` (the module ``module``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (
                    isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("import_module", "find_spec", "import_plugin")
                )
                or (isinstance(node.func, ast.Name) and node.func.id in ("__import__", "import_module"))
            )
        ):
            names = [_resolved(node.args[0].value, node.args[1:])]
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytest_plugins" for t in node.targets
        ):
            # pytest imports these by name: a plugin list is an import.
            names = [c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
        hits = [n for n in names if n == SANDBOX or n.startswith(SANDBOX + ".")]
        if hits:
            found.append(f"{node.lineno}: {hits[0]}")
    return found


def core_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if (PACKAGE / "sandbox") not in p.parents)


def test_the_core_is_every_module_outside_sandbox() -> None:
    names = {_module_name(p) for p in core_modules()}
    assert {"pytest_eksid.plugin", "pytest_eksid.fixtures", "pytest_eksid.profile", "pytest_eksid.live"} <= names
    assert not any(n.startswith(SANDBOX) for n in names)


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_module_imports_nothing_from_the_sandbox(path: Path) -> None:
    found = sandbox_imports(path.read_text(encoding="utf-8"), _module_name(path), path.name == "__init__.py")
    assert not found, f"{path.relative_to(PACKAGE.parent)} imports the sandbox: {found}; reach it through a hook"


@pytest.mark.parametrize(
    ("source", "module"),
    [
        ("import pytest_eksid.sandbox\n", "pytest_eksid.plugin"),
        ("import pytest_eksid.sandbox.runtime as rt\n", "pytest_eksid.plugin"),
        ("from pytest_eksid.sandbox import require\n", "pytest_eksid.plugin"),
        ("from pytest_eksid import sandbox\n", "pytest_eksid.plugin"),
        ("def f():\n    from pytest_eksid.sandbox.cloud import x\n", "pytest_eksid.fixtures"),
        ("class C:\n    def m(self):\n        import pytest_eksid.sandbox.child\n", "pytest_eksid.fixtures"),
        ("from .sandbox import model\n", "pytest_eksid.plugin"),
        ("from . import sandbox\n", "pytest_eksid.plugin"),
        ("from ..sandbox.model import SandboxSection\n", "pytest_eksid.checks.policy"),
        ("import importlib\nimportlib.import_module('pytest_eksid.sandbox.runtime')\n", "pytest_eksid.plugin"),
        ("__import__('pytest_eksid.sandbox')\n", "pytest_eksid.plugin"),
        ("import importlib\nimportlib.import_module('.sandbox.runtime', 'pytest_eksid')\n", "pytest_eksid.plugin"),
        ("pytest_plugins = ['pytest_eksid.sandbox.plugin']\n", "pytest_eksid.plugin"),
        (
            "def f(config):\n    config.pluginmanager.import_plugin('pytest_eksid.sandbox.plugin')\n",
            "pytest_eksid.plugin",
        ),
    ],
)
def test_every_form_of_import_is_found(source: str, module: str) -> None:
    assert sandbox_imports(source, module), source


@pytest.mark.parametrize(
    "source",
    [
        "import pytest_eksid.sandboxes\n",
        "from pytest_eksid import sandboxing\n",
        "from pytest_eksid.profile import load_profile\n",
        "x = 'pytest_eksid.sandbox'\n",  # a string is not an import (the docs name the module)
    ],
)
def test_look_alikes_are_not_imports_of_the_sandbox(source: str) -> None:
    assert sandbox_imports(source, "pytest_eksid.plugin") == []
