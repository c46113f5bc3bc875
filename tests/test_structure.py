"""The package's shape: every module imports, the import graph has no cycle, and the layers hold.

The graph is read from the source (``ast``), function-local imports included, so a cycle cannot
hide behind an import inside a function. ``from pkg import name`` is an edge to ``pkg.name`` when
that is a module, else to ``pkg``; the implicit import of a module's parent packages is not an edge
(a package that re-exports its children is not a cycle).
"""
from __future__ import annotations

import ast
import importlib
import pathlib
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "hashkern"

# What ops must never reach, directly or through other modules: the layers above them and the
# application (whether it lives in hashkern/training/ or, before the move, in the package root).
ABOVE_OPS = ("hashkern.losses", "hashkern.models", "hashkern.training", "hashkern.train", "hashkern.pretrain",
             "hashkern.demo", "hashkern.evaluate", "hashkern.checkpoint", "hashkern.cli", "hashkern.data")


def _module_files() -> dict[str, pathlib.Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


def _is_module(name: str) -> bool:
    """A Python module or package of hashkern, or a compiled extension (``hashkern._C``)."""
    if name in MODULES:
        return True
    *package, leaf = name.split(".")
    folder = ROOT.parent.joinpath(*package)
    return any(folder.glob(f"{leaf}.*.so")) or any(folder.glob(f"{leaf}.*.pyd"))


def _imports(name: str, path: pathlib.Path) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if _is_module(full) else base)
    return {t for t in targets if t.split(".")[0] == "hashkern" and t != name}


def import_graph() -> dict[str, set[str]]:
    """{module: the hashkern modules it imports anywhere in its source}."""
    return {name: _imports(name, path) for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


@pytest.mark.parametrize("name", sorted(m for m in MODULES if not m.endswith(".__main__")))  # __main__ runs
def test_every_module_imports(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as missing:
            if missing.name and missing.name.split(".")[0] == "hashkern":
                raise  # a broken import inside the package, not an optional dependency
            pytest.skip(f"{name} needs the optional dependency {missing.name}")


def test_the_import_graph_has_no_cycle():
    found = [sorted(c) for c in cycles(import_graph())]
    assert not found, f"import cycles: {found}"


def test_ops_import_nothing_above_them():
    graph = import_graph()
    for name in (m for m in graph if m.startswith("hashkern.ops")):
        above = sorted(t for t in reachable(graph, name) if t.startswith(ABOVE_OPS))
        assert not above, f"{name} reaches {above}: ops import nothing from losses, models or the application"


def test_the_checks_see_what_they_look_for():
    """The cycle finder, the reachability and the ast reading catch planted faults."""
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(planted) == [{"a", "b", "c"}]
    assert reachable(planted, "d") == {"a", "b", "c"}
    graph = import_graph()
    assert "hashkern.ops.patchsim.triton_launch" in graph["hashkern.ops.patchsim.autograd"]  # a function-local import
    assert "hashkern._validation" in graph["hashkern.ops.hamming"]


def test_every_op_package_has_the_template_files():
    """The roles of DESIGN.md's layout under the same file names in every op package (a backend may
    add files of its own, e.g. ``triton_epilogue.py``, but never under another op's old names)."""
    ops = ROOT / "ops"
    old_names = {"functions.py", "scan_torch.py", "torch_gemm.py", "triton_fwd.py", "triton_bwd.py",
                 "triton_scan.py", "triton_scan_kernels.py"}
    packages = sorted(p for p in ops.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert {"hamming", "packbits", "search", "softsort", "patchsim", "mutual_attention"} <= {p.name for p in packages}
    assert not [f.name for f in ops.glob("*.py") if not f.name.startswith("_")], "an op outside a package"
    for package in packages:
        files = {f.name for f in package.glob("*.py")}
        assert {"__init__.py", "reference.py"} <= files, (package.name, sorted(files))
        assert not files & old_names, (package.name, sorted(files & old_names))
        triton = {f for f in files if f.startswith("triton_")}
        assert not triton or {"triton_launch.py", "triton_kernels.py"} <= triton, (package.name, sorted(triton))


def test_op_schemas_are_defined_in_one_place():
    """Every ``m.def`` is in csrc/hashkern.cpp; the kernel sources only ``m.impl``."""
    csrc = ROOT.parent / "csrc"
    for source in sorted(csrc.rglob("*")):
        if source.suffix not in (".cpp", ".cu", ".h", ".cuh") or source.name == "hashkern.cpp":
            continue
        text = source.read_text()
        assert "m.def(" not in text and "TORCH_LIBRARY(" not in text and "TORCH_LIBRARY_FRAGMENT(" not in text, source
