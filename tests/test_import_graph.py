"""The package's modules import each other as a DAG, and each one can be imported first."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import janus_utils

PACKAGE_DIR = Path(janus_utils.__file__).parent
PACKAGE = "janus_utils"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {
    _module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))
}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(importer: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The package modules an import statement loads (names that are modules count too)."""
    if isinstance(node, ast.Import):
        bases = [alias.name for alias in node.names]
        names: list[str] = []
    else:
        if node.level:
            anchor = importer.split(".")
            if not _is_package(importer):
                anchor.pop()
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        bases = [base]
        names = [alias.name for alias in node.names]
    for base in bases:
        if base in MODULES:
            yield base
        for name in names:
            if f"{base}.{name}" in MODULES:
                yield f"{base}.{name}"


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(name: str) -> tuple[set[str], set[str]]:
    """(modules imported while *name* is imported, modules imported inside its functions)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    top: set[str] = set()
    deferred: set[str] = set()

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking_block(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                (deferred if in_function else top).update(_resolve(name, child))
            nested = in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            walk(child, nested)

    walk(tree, False)
    top.discard(name)
    deferred.discard(name)
    return top, deferred


GRAPH = {name: _imports(name) for name in MODULES}


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _loaded_by(name: str, *, packages: bool = True) -> set[str]:
    """Every package module that importing *name* runs: its imports, theirs, and so on.

    With *packages*, each module's parent packages too (importing ``a.b.c``
    runs ``a`` and ``a.b`` first).  Without, only the import statements: a
    package that imports its own submodule is not a cycle to Python, the
    parent is already loading.
    """
    seen: set[str] = set()
    stack = [name]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        stack.extend(GRAPH[current][0])
        if packages:
            stack.extend(_ancestors(current))
    seen.discard(name)
    return seen


class TestImportGraph:
    def test_the_graph_was_read(self) -> None:
        """The parser finds the edges this file is about (a broken parser would pass everything)."""
        assert "janus_utils._redact" in GRAPH["janus_utils.error_handling._base"][0]
        assert "janus_utils._redact" in GRAPH["janus_utils.security"][0]
        assert "janus_utils.error_handling.utils.errors" in GRAPH["janus_utils.security"][0]
        assert "janus_utils.logger" in GRAPH["janus_utils.error_handling._handling"][1]

    def test_module_level_imports_form_a_dag(self) -> None:
        """No module imports, at import time, a module that imports it back."""
        cycles = [
            f"{name} -> {target}"
            for name in MODULES
            for target in GRAPH[name][0]
            if name in _loaded_by(target, packages=False)
        ]
        assert [] == cycles

    def test_no_function_level_import_hides_a_cycle(self) -> None:
        """An import inside a function never loads a module that loads the importer."""
        hidden = [
            f"{name} -> {target}"
            for name in MODULES
            for target in GRAPH[name][1]
            if name in _loaded_by(target)
        ]
        assert [] == hidden

    def test_the_redaction_engine_stands_alone(self) -> None:
        """janus_utils._redact imports nothing of janus_utils, at import time or later."""
        assert (set(), set()) == GRAPH["janus_utils._redact"]

    def test_the_old_circle_would_be_caught(self) -> None:
        """A function-level import of security from error_handling._base is reported."""
        assert "janus_utils.error_handling._base" in _loaded_by("janus_utils.security")


FIRST_IMPORTS = {
    "janus_utils.security": """
        import janus_utils.security as security
        from janus_utils.error_handling import ConfigError, NotFound
        try:
            security.Redactor(extra_keys="password")
        except ConfigError as err:
            print("config_error", err.code)
        print(NotFound("password=hunter2").to_dict()["detail"])
    """,
    "janus_utils.error_handling": """
        import janus_utils.error_handling as eh
        print(eh.BadRequest("token=abc123").to_dict()["detail"])
        import janus_utils.security as security
        try:
            security.Redactor(extra_keys=[3])
        except eh.ConfigError as err:
            print("config_error", err.code)
    """,
    "janus_utils.error_handling._base": """
        from janus_utils.error_handling._base import JanusError
        print(JanusError("password=hunter2", http_status=400).to_dict()["detail"])
        from janus_utils.security import Redactor
        from janus_utils.error_handling import ConfigError
        try:
            Redactor(keys=["x"])
        except ConfigError as err:
            print("config_error", err.code)
    """,
    "janus_utils.error_handling._handling": """
        import logging
        from janus_utils.error_handling._handling import log_error
        from janus_utils.error_handling import ValidationError
        quiet = logging.getLogger("t")
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
        print(log_error(ValueError("password=hunter2"), logger=quiet))
        print(ValidationError(field="f", reason="r").to_dict()["code"])
    """,
    "janus_utils._redact": """
        from janus_utils import _redact
        print(_redact.redact_text("password=hunter2"))
        try:
            _redact.Redactor(extra_keys="password")
        except ValueError as err:
            print("value_error", type(err).__name__)
    """,
}


class TestEachModuleImportsFirst:
    @pytest.mark.parametrize("module", sorted(FIRST_IMPORTS))
    def test_imported_first_in_a_fresh_process(self, module: str) -> None:
        """Imported before anything else of janus_utils, the module works, errors and all."""
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(FIRST_IMPORTS[module])],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "" == proc.stderr
        assert 0 == proc.returncode
        out = proc.stdout
        assert "hunter2" not in out and "abc123" not in out
        if "config_error" in FIRST_IMPORTS[module]:
            assert "config_error config_error" in out
            assert "[REDACTED:" in out
        if module == "janus_utils._redact":
            assert "password=[REDACTED:password]\nvalue_error RedactorConfigError\n" == out
        if module == "janus_utils.error_handling._handling":
            assert "True\nvalidation_error\n" == out
