"""The package map, enforced by reading imports.

Core packages, in layers (a module may import its own layer and the layers below):

    sim (0) < data: partition, participants (1) < learning (2) < protocol (3) < algorithms (4)
    < valuation (5)

The core imports only the standard library, numpy and torch: no Hydra, OmegaConf, MLflow, DVC,
Lightning, no file access. The edges (``app``, ``io``, ``models``, ``reporting``, ``cli``,
``launchers``, ``data.datasets``, ``data.prepared``) may import the core, never the other way.
"""

import ast
import sys
from pathlib import Path

import derelayl

PACKAGE = Path(derelayl.__file__).parent
LAYERS = {
    "sim": 0,
    "data.partition": 1,
    "data.participants": 1,
    "learning": 2,
    "protocol": 3,
    "algorithms": 4,
    "valuation": 5,
}
EDGES = ("app", "io", "models", "reporting", "cli", "launchers", "data.datasets", "data.prepared")
# orjson: the ledger's canonical JSON (text in memory, no I/O), written faster
ALLOWED_THIRD_PARTY = {"numpy", "torch", "orjson", "derelayl"}
FORBIDDEN_CALLS = {"open"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    """The core layer of ``derelayl.<module>`` (None for an edge module)."""
    for prefix, layer in sorted(LAYERS.items(), key=lambda kv: -len(kv[0])):
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return None


def core_modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        if name and layer_of(name) is not None:
            yield path, name


def imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno


def test_every_module_has_a_home():
    homeless = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        if name and name != "data" and layer_of(name) is None and not name.startswith(EDGES):
            homeless.append(name)
    assert not homeless, f"modules outside the map (add them to LAYERS or EDGES): {homeless}"


def test_core_imports_only_stdlib_numpy_torch_and_lower_layers():
    stdlib = set(sys.stdlib_module_names)
    bad = []
    for path, name in core_modules():
        mine = layer_of(name)
        for module, line in imports(path):
            top = module.split(".")[0]
            if top not in stdlib and top not in ALLOWED_THIRD_PARTY:
                bad.append(f"{name}:{line} imports {module}")
            if top == "derelayl":
                target = module.split(".", 1)[1] if "." in module else ""
                layer = layer_of(target)
                if layer is None:
                    bad.append(f"{name}:{line} (core) imports the edge module {module}")
                elif layer > mine:
                    bad.append(f"{name}:{line} (layer {mine}) imports {module} (layer {layer})")
    assert not bad, bad


def test_core_does_no_file_io():
    bad = []
    for path, name in core_modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in FORBIDDEN_CALLS
            ):
                bad.append(f"{name}:{node.lineno} calls {node.func.id}()")
            if isinstance(node, ast.Attribute) and node.attr in {
                "write_text",
                "read_text",
                "write_bytes",
                "read_bytes",
            }:
                bad.append(f"{name}:{node.lineno} uses .{node.attr}")
    assert not bad, bad


MAX_FUNCTION_LINES = 80


def test_no_function_in_src_is_longer_than_80_lines():
    """A long function is a sequence of phases that want to be named functions of their own: each
    function (or method) of ``src/``, counted from its ``def`` line through its last line, is at
    most 80 lines long."""
    src = PACKAGE.parent
    long = []
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(src)}:{node.lineno} {node.name} ({length})")
    assert not long, long
