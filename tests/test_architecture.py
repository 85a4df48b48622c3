"""The core stays free of configuration, tracking, training frameworks and files."""

import ast
from pathlib import Path

import derelayl

CORE = Path(derelayl.__file__).parent / "core"
ALLOWED_THIRD_PARTY = {"numpy", "torch", "derelayl"}
FORBIDDEN_CALLS = {"open"}


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0], node.lineno


def test_core_imports_only_stdlib_numpy_torch():
    import sys

    stdlib = set(sys.stdlib_module_names)
    bad = []
    for path in sorted(CORE.rglob("*.py")):
        for module, line in _imports(path):
            if module not in stdlib and module not in ALLOWED_THIRD_PARTY:
                bad.append(f"{path.name}:{line} imports {module}")
            if module == "derelayl":
                pass
        text = path.read_text()
        for forbidden in ("derelayl.tracking", "derelayl.cli", "derelayl.pipeline",
                          "derelayl.runners", "derelayl.data", "derelayl.models"):
            if forbidden in text:
                bad.append(f"{path.name} refers to {forbidden}")
    assert not bad, bad


def test_core_does_no_file_io():
    bad = []
    for path in sorted(CORE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in FORBIDDEN_CALLS:
                bad.append(f"{path.name}:{node.lineno} calls {node.func.id}()")
            if isinstance(node, ast.Attribute) and node.attr in {"write_text", "read_text",
                                                                   "write_bytes", "read_bytes"}:
                bad.append(f"{path.name}:{node.lineno} uses .{node.attr}")
    assert not bad, bad
