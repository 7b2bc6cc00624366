"""The library's layers, checked from the source: no import circle, imports point only down.

Every ``import`` counts, wherever it stands: at the top, inside a function, or under
``if TYPE_CHECKING:`` (an import for type hints says as much about who must know whom as one
that runs).  The graph is read with :mod:`ast`, so nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: rank of each layer (subpackage or top module of vmfs/); a module may import from its own
#: layer (without circles) and from layers of a lower rank only
LAYERS: dict[str, int] = {
    "vmfs": 0,  # the package face: the error tree only
    "vmfs.errors": 0,
    "vmfs.ondisk": 1,
    "vmfs.format": 2,
    "vmfs.device": 2,
    "vmfs.volume": 3,
    "vmfs.cluster": 4,
    "vmfs.write": 5,
    "vmfs.fuse": 6,
    "vmfs.fsck": 6,
    "vmfs.mkfs": 6,
    "vmfs.vmdk": 6,
    "vmfs.debug": 6,
}


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``package_dir``."""
    base = package_dir.parent
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported_names(path: Path, module: str) -> list[tuple[str, int]]:
    """Every dotted name ``path`` imports (relative imports resolved), with its line."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            # ``from P import x``: the submodule P.x where x is one, else (a name defined in P) P itself
            names += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return names


def import_graph(package_dir: Path) -> tuple[dict[str, dict[str, int]], list[tuple[str, str, int]]]:
    """Edges between modules of the package (module -> {imported module: line}), and every
    import of a name outside it that starts with ``hostsim``."""
    modules = module_files(package_dir)
    edges: dict[str, dict[str, int]] = {m: {} for m in modules}
    outside: list[tuple[str, str, int]] = []
    for module, path in modules.items():
        for name, line in imported_names(path, module):
            if name.split(".")[0] == "hostsim":
                outside.append((module, name, line))
            target = name  # the longest prefix that is a module of the package
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != module:
                edges[module].setdefault(target, line)
    return edges, outside


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


#: the simulated host (esx-design.md 6.1): the hardware interface component (LUN drivers, device
#: models, rescan, datastores) under the VMkernel (engine, worlds, schedulers, storage stack),
#: one VMM per VM above it, the service console on top; hostsim uses vmfs, never the reverse
HOSTSIM_LAYERS: dict[str, int] = {
    "hostsim": 0,
    "hostsim.hic": 1,
    "hostsim.vmkernel": 2,
    "hostsim.vmm": 3,
    "hostsim.console": 4,
}


def layer_of(module: str, layers: dict[str, int] = LAYERS) -> str:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in layers:
            return name
    raise KeyError(module)


def upward_imports(edges: dict[str, dict[str, int]], layers: dict[str, int] = LAYERS) -> list[str]:
    bad = []
    for module, targets in sorted(edges.items()):
        for target, line in sorted(targets.items()):
            above, below = layer_of(target, layers), layer_of(module, layers)
            if layers[above] > layers[below]:
                bad.append(f"{module}:{line} imports {target} ({above} is above {below})")
    return bad


GRAPH, HOSTSIM_IMPORTS = import_graph(ROOT / "vmfs")
SIM_GRAPH, _ = import_graph(ROOT / "hostsim")


def test_no_import_cycle() -> None:
    found = cycles(GRAPH)
    detail = [" -> ".join(c) + "; edges: " + ", ".join(
        f"{a}:{GRAPH[a][b]}->{b}" for a in c for b in c if b in GRAPH[a]) for c in found]
    assert not found, "import cycles in vmfs/:\n" + "\n".join(detail)


def test_imports_point_down_the_layers() -> None:
    unknown = [m for m in GRAPH if not any(m == k or m.startswith(k + ".") for k in LAYERS)]
    assert not unknown, f"modules outside every layer (add them to LAYERS): {unknown}"
    bad = upward_imports(GRAPH)
    assert not bad, "\n".join(bad)


def test_vmfs_never_imports_hostsim() -> None:
    assert not HOSTSIM_IMPORTS, HOSTSIM_IMPORTS


def test_the_checker_sees_a_cycle_and_a_hostsim_import(tmp_path: Path) -> None:
    """The scan itself: a circle made only of a function-level import and a TYPE_CHECKING import,
    and a hostsim import inside a function, are all found."""
    pkg = tmp_path / "vmfs"
    (pkg / "volume").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "volume" / "__init__.py").write_text("")
    (pkg / "volume" / "a.py").write_text("def f():\n    from vmfs.volume.b import g\n")
    (pkg / "volume" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n"
        "def g():\n    import hostsim.vmm\n"
    )
    edges, outside = import_graph(pkg)
    assert cycles(edges) == [["vmfs.volume.a", "vmfs.volume.b"]]
    assert outside == [("vmfs.volume.b", "hostsim.vmm", 5)]
    (pkg / "volume" / "a.py").write_text("def f():\n    from vmfs.write import posix\n")
    (pkg / "write").mkdir()
    (pkg / "write" / "__init__.py").write_text("")
    (pkg / "write" / "posix.py").write_text("")
    edges, _ = import_graph(pkg)
    assert upward_imports(edges) == ["vmfs.volume.a:2 imports vmfs.write.posix (vmfs.write is above vmfs.volume)"]
    (pkg / "volume" / "a.py").write_text("from vmfs.write import SOMETHING\n")
    edges, _ = import_graph(pkg)
    assert upward_imports(edges) == ["vmfs.volume.a:1 imports vmfs.write (vmfs.write is above vmfs.volume)"]


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_every_layer_exists(layer: str) -> None:
    assert any(m == layer or m.startswith(layer + ".") for m in GRAPH), f"{layer} has no module"


def test_hostsim_has_no_import_cycle_and_imports_point_down() -> None:
    assert not cycles(SIM_GRAPH), cycles(SIM_GRAPH)
    unknown = [m for m in SIM_GRAPH if not any(m == k or m.startswith(k + ".") for k in HOSTSIM_LAYERS)]
    assert not unknown, f"hostsim modules outside every layer (add them to HOSTSIM_LAYERS): {unknown}"
    bad = upward_imports(SIM_GRAPH, HOSTSIM_LAYERS)
    assert not bad, "\n".join(bad)
