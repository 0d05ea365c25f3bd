"""The layers stay apart: the engine imports no front, no front touches LMDB, no import cycles in s3sidecar.

Read from the source with ``ast`` (imports inside functions count too), so
a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

FRONTS = ("objfs.fuse", "objfs.dicom", "s3sidecar")

# Known violations being removed by their owners, each with the reason.
# An entry that no longer matches fails the test, so the list only shrinks.
ALLOWED: set[tuple[str, str]] = set()  # (file, module) pairs allowed to break the rule: none


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports_in(tree: ast.AST, package: str) -> set[str]:
    """Every module a parsed file imports, anywhere in it, as absolute names (``package``: its package)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            # ``from . import errors`` imports a submodule; other names are harmless extras.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def imports_of(path: Path) -> set[str]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return _imports_in(ast.parse(path.read_text(), str(path)), package)


def _sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (REPO / package).rglob("*.py"))


def _names(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_imports_are_found_inside_functions_and_relative() -> None:
    text = "import a.b\nfrom . import sibling\n\ndef f():\n    from ..dicom.index import DicomIndexer\n    import lmdb\n"
    found = _imports_in(ast.parse(text), "objfs.store")
    assert {"a.b", "objfs.store.sibling", "objfs.dicom.index", "lmdb"} <= found


def test_engine_imports_no_front() -> None:
    seen = set()
    bad = []
    for path in _sources("objfs/store"):
        rel = str(path.relative_to(REPO))
        for module in imports_of(path):
            if any(_names(module, front) for front in FRONTS):
                allowed = {(f, m) for f, m in ALLOWED if f == rel and _names(module, m)}
                if allowed:
                    seen |= allowed
                else:
                    bad.append(f"{rel} imports {module}")
    assert not bad, "the engine must not import a front:\n" + "\n".join(bad)
    stale = ALLOWED - seen
    assert not stale, f"allowlist entries no longer needed, remove them: {sorted(stale)}"


def test_fronts_do_not_import_lmdb() -> None:
    bad = [
        f"{path.relative_to(REPO)} imports {module}"
        for path in _sources("s3sidecar", "objfs/fuse", "objfs/dicom")
        for module in imports_of(path)
        if _names(module, "lmdb")
    ]
    assert not bad, "fronts reach the index only through the engine:\n" + "\n".join(bad)


def test_s3sidecar_uses_only_the_public_engine_api() -> None:
    bad = []
    for path in _sources("s3sidecar"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names):
                bad.append(f"{path.relative_to(REPO)}: from {node.module} import *")
        for module in imports_of(path):
            if _names(module, "objfs.store.objects"):
                bad.append(f"{path.relative_to(REPO)} imports {module}")
    assert not bad, "\n".join(bad)


def test_s3sidecar_has_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for path in _sources("s3sidecar"):
        name = _module_name(path)
        graph[name] = {m for m in imports_of(path) if _names(m, "s3sidecar")}
    modules = set(graph)
    for name in graph:
        graph[name] = {m for m in graph[name] if m in modules and m != name}
    # A package's __init__ importing its submodules lazily is not a cycle of its own.
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt in ("s3sidecar", "s3sidecar.handlers"):
                continue
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
