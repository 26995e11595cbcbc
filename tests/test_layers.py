"""The package layering the README's architecture section draws, enforced on the source (issue 14, item 7).

Every module's imports are read with `ast` (top-level ones AND those inside functions, which run later but are
still dependencies), resolved to ldmkit modules, and checked twice:
  1. a package may import only packages at its own level or below (training and evaluation share a level and
     never import each other);
  2. no two modules import each other, directly or through a longer loop (a strongly connected component).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ldmkit"

# Low -> high. A package imports only packages of a lower level (or its own package): two packages on one level
# (training and evaluation) never import each other.
LAYERS: list[set[str]] = [
    {"errors"},
    {"cpu_threads"},
    {"", "config"},  # "" is ldmkit/__init__.py
    {"metrics"},  # numpy only: retrieval ranks, bootstrap intervals (what training and evaluation both measure)
    {"data"},
    {"models"},
    {"diffusion"},
    {"pipeline"},
    {"training", "evaluation"},  # side by side: neither imports the other
    {"workflows"},
    {"serve"},
    {"cli"},
    {"__main__"},
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """The ldmkit modules `path` imports, anywhere in the file (`from a import b` names module a.b when it is one)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "ldmkit")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "ldmkit":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return {m for m in found if m != name}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        # `import ldmkit.a.b` runs ldmkit/a/__init__.py too, but that is the package's own business: an edge
        # to the named module is what this module depends on.
        graph[name] = {m for m in imported_modules(path, name, known) if m in known}
    return graph


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in sorted(graph.items()):
        own = package_of(module)
        assert own in LEVEL, f"{module}: package {own!r} is not in the layer table of tests/test_layers.py"
        for target in sorted(targets):
            other = package_of(target)
            if other != own and LEVEL[other] >= LEVEL[own]:
                bad.append(f"{module} imports {target} ({other} is not below {own})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_packages_import_only_lower_layers() -> None:
    bad = layer_violations(import_graph())
    assert not bad, "layering violations (README, Architecture):\n" + "\n".join(bad)


# Cycles knowingly left for later; each entry must still be a cycle (so a fixed one is removed from here), and no
# other cycle may appear. Empty since issue 14 was finished.
PENDING_CYCLES: list[list[str]] = []


def test_no_import_cycles_between_modules() -> None:
    loops = cycles(import_graph())
    new = [c for c in loops if c not in PENDING_CYCLES]
    assert not new, "modules that import each other:\n" + "\n".join(" <-> ".join(c) for c in new)
    fixed = [c for c in PENDING_CYCLES if c not in loops]
    assert not fixed, f"no longer a cycle: remove it from PENDING_CYCLES: {fixed}"


def test_the_checks_can_fail() -> None:
    """The checkers themselves, on a made-up graph: an upward import and a three-module loop are caught."""
    graph = {
        "ldmkit.data.a": {"ldmkit.training.b"},
        "ldmkit.training.b": {"ldmkit.training.c"},
        "ldmkit.training.c": {"ldmkit.training.d"},
        "ldmkit.training.d": {"ldmkit.training.b"},
        "ldmkit.evaluation.e": {"ldmkit.data.a"},
        "ldmkit.training.f": {"ldmkit.evaluation.e"},
    }
    assert layer_violations(graph) == [
        "ldmkit.data.a imports ldmkit.training.b (training is not below data)",
        "ldmkit.training.f imports ldmkit.evaluation.e (evaluation is not below training)",
    ]
    assert cycles(graph) == [["ldmkit.training.b", "ldmkit.training.c", "ldmkit.training.d"]]


def test_function_level_and_relative_imports_are_seen(tmp_path: Path) -> None:
    pkg = tmp_path / "ldmkit" / "data"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    source = pkg / "x.py"
    source.write_text("def f():\n    from ldmkit.training.loop import train\n    from . import y\n")
    known = {"ldmkit.data.x", "ldmkit.data.y", "ldmkit.training.loop"}
    assert imported_modules(source, "ldmkit.data.x", known) == {"ldmkit.training.loop", "ldmkit.data.y"}
