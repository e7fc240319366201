"""House rules for the package's imports, read statically (``ast``) from the source files and then tried for real.

The modules are the ``.py`` files under the folders of ``[tool.setuptools] package-dir`` in pyproject.toml
(``src/zaugnet`` -> ``zaugnet.*``, ``training`` -> ``zaugnet.training.*``, ``export`` -> ``zaugnet.export.*``).
The rules:

(a) no import cycle between modules, lazy (function-level) imports included: a cycle is a design knot even
    where no import happens to fail today;
(b) the core (every ``zaugnet.*`` module but ``zaugnet.training.*``, ``zaugnet.export.*`` and ``zaugnet.cli``)
    imports neither ``zaugnet.training`` nor ``zaugnet.export``;
(c) no function-level import of a zaugnet module in the core or in ``zaugnet.training``: a module's
    dependencies stand at its top, where (a) and (b) see them and importing it proves them. The exceptions:

    - ``zaugnet.cli`` imports what each command needs inside the command, so that ``zaugnet --help`` (and a
      mistyped option) answers at once without importing torch, numpy, tifffile or scikit-image;
    - ``zaugnet.export`` may import only its own ``zaugnet.export.onnx`` and ``zaugnet.export.torchscript``
      lazily, and only where :data:`LAZY_EXPORT` lists it (a new lazy import fails): both are leaf modules (they
      import nothing of zaugnet's but ``zaugnet.errors`` and ``zaugnet.export.parity``), the heavy onnx and
      onnxruntime are imported inside ``zaugnet.export.onnx``'s own functions, and ``zaugnet.export.bioimageio``
      imports both modules at its top, so these lazy imports hide no dependency and cannot close a cycle;
(d) every module imports for real: in one fresh interpreter, each module is imported after every zaugnet module
    has been dropped from ``sys.modules`` (third-party modules such as torch stay loaded, so this is fast), i.e.
    each module is the first zaugnet module imported, which is how a circular import would show. Left out:
    ``zaugnet.__main__``, whose import runs the command line (``sys.exit(main())``).

``from PKG import NAME`` counts as importing the submodule ``PKG.NAME`` where that is a module, else as
importing ``PKG`` (NAME is then an attribute of its ``__init__``); relative imports are resolved.
Every failure names the modules (and the line of each import).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Lazy imports of zaugnet modules that zaugnet.export may keep: (importing module, imported module).
LAZY_EXPORT = {
    ("zaugnet.export.load", "zaugnet.export.onnx"),
    ("zaugnet.export.load", "zaugnet.export.torchscript"),
    ("zaugnet.export.bioimageio", "zaugnet.export.torchscript"),
}
#: Modules importing which has effects beyond defining names (left out of the real imports).
NOT_IMPORTED = {"zaugnet.__main__"}
TRAINING, EXPORT, CLI = "zaugnet.training", "zaugnet.export", "zaugnet.cli"


@dataclass(frozen=True)
class Import:
    """One import statement's dependency: ``source`` imports ``target`` at ``line``; ``lazy`` inside a function."""

    source: str
    target: str
    line: int
    lazy: bool

    def __str__(self) -> str:
        return f"{self.source} (line {self.line}{', in a function' if self.lazy else ''}) imports {self.target}"


# ------------------------------------------------------------------------------------ the walker
def package_roots(pyproject: Path = REPO / "pyproject.toml") -> dict[str, Path]:
    """Package name -> folder, from ``[tool.setuptools] package-dir``."""
    table = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-dir"]
    return {name: (pyproject.parent / folder).resolve() for name, folder in table.items()}


def module_files(roots: Mapping[str, Path]) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file under each root (``__init__.py`` is the package itself)."""
    modules: dict[str, Path] = {}
    for package, folder in roots.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _ours(name: str, modules: Mapping[str, Path]) -> str | None:
    """``name`` or its longest prefix that is one of ``modules`` (None for other packages' modules)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, path: Path, modules: Mapping[str, Path]) -> list[Import]:
    """The zaugnet modules ``module`` (read from ``path``) imports, with line numbers, lazy or not."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if _is_package(path) else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _ours(alias.name, modules)
                if target is not None and target != module:
                    found.append(Import(module, target, node.lineno, lazy))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target = sub if sub in modules else _ours(base, modules)
                if target is not None and target != module:
                    found.append(Import(module, target, node.lineno, lazy))
        inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return found


def all_imports(modules: Mapping[str, Path]) -> list[Import]:
    """Every zaugnet import of every module."""
    return [imp for name, path in sorted(modules.items()) for imp in imports_of(name, path, modules)]


def import_cycles(imports: Iterable[Import]) -> list[list[Import]]:
    """One cycle (as its chain of imports, back to where it starts) per strongly connected group of modules."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports:
        edges.setdefault(imp.source, {}).setdefault(imp.target, imp)
        edges.setdefault(imp.target, {})
    # Tarjan's strongly connected components (iterative)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
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
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1 or node in edges[node]:
                    groups.append(group)
    cycles = []
    for group in groups:  # a shortest way back to the group's first module, by breadth-first search
        start = min(group)
        previous: dict[str, Import] = {}
        frontier = [start]
        while frontier and start not in previous:
            step = []
            for node in frontier:
                for target, imp in sorted(edges[node].items()):
                    if target in group and target not in previous:
                        previous[target] = imp
                        step.append(target)
            frontier = step
        chain = [previous[start]]
        while chain[-1].source != start:
            chain.append(previous[chain[-1].source])
        cycles.append(chain[::-1])
    return sorted(cycles, key=lambda c: c[0].source)


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _core(module: str) -> bool:
    return not (_in(module, TRAINING) or _in(module, EXPORT) or module == CLI)


def cycle_problems(imports: Iterable[Import]) -> list[str]:
    """Rule (a): one line per cycle, ``a -> b -> a`` followed by the imports that make it."""
    return [" -> ".join([c[0].source, *(imp.target for imp in c)]) + ": " + "; ".join(map(str, c))
            for c in import_cycles(imports)]


def layering_problems(imports: Iterable[Import]) -> list[str]:
    """Rule (b): core modules importing zaugnet.training or zaugnet.export."""
    return [str(imp) for imp in imports
            if _core(imp.source) and (_in(imp.target, TRAINING) or _in(imp.target, EXPORT))]


def lazy_problems(imports: Iterable[Import]) -> list[str]:
    """Rule (c): function-level zaugnet imports outside the CLI and outside :data:`LAZY_EXPORT`."""
    problems = []
    for imp in imports:
        if not imp.lazy or imp.source == CLI:
            continue
        if _in(imp.source, EXPORT) and (imp.source, imp.target) in LAZY_EXPORT:
            continue
        problems.append(str(imp))
    return problems


# ------------------------------------------------------------------------------------ the rules
@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    found = module_files(package_roots())
    assert {"zaugnet", "zaugnet.cli", "zaugnet.evaluate.selfcheck", TRAINING, "zaugnet.training.trainer", EXPORT,
            "zaugnet.export.load"} <= set(found), sorted(found)
    return found


@pytest.fixture(scope="module")
def imports(modules: dict[str, Path]) -> list[Import]:
    return all_imports(modules)


def test_no_import_cycles(imports: list[Import]) -> None:
    problems = cycle_problems(imports)
    assert not problems, "import cycles:\n" + "\n".join(problems)


def test_the_core_imports_neither_training_nor_export(imports: list[Import]) -> None:
    problems = layering_problems(imports)
    assert not problems, "core modules importing zaugnet.training or zaugnet.export:\n" + "\n".join(problems)


def test_no_function_level_imports_of_zaugnet_modules_outside_the_cli(imports: list[Import]) -> None:
    problems = lazy_problems(imports)
    assert not problems, ("function-level imports of zaugnet modules (move them to the top of the module; only "
                          "zaugnet.cli and the listed zaugnet.export ones may be lazy):\n" + "\n".join(problems))
    kept = {(imp.source, imp.target) for imp in imports if imp.lazy and _in(imp.source, EXPORT)}
    assert kept == LAZY_EXPORT, f"LAZY_EXPORT lists lazy imports that are gone: {sorted(LAZY_EXPORT - kept)}"


_IMPORT_EACH_FIRST = textwrap.dedent("""
    import importlib, json, sys, traceback
    failures = {}
    for name in json.loads(sys.argv[1]):
        for loaded in [m for m in sys.modules if m == "zaugnet" or m.startswith("zaugnet.")]:
            del sys.modules[loaded]
        try:
            importlib.import_module(name)
        except BaseException as err:  # noqa: BLE001 - report every kind of failure, SystemExit included
            failures[name] = traceback.format_exception_only(type(err), err)[-1].strip()
    print(json.dumps(failures))
""")


def test_every_module_imports_first_in_a_fresh_interpreter(modules: dict[str, Path]) -> None:
    names = sorted(set(modules) - NOT_IMPORTED)
    proc = subprocess.run([sys.executable, "-c", _IMPORT_EACH_FIRST, json.dumps(names)], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not failures, "modules that fail to import (each imported first):\n" + "\n".join(
        f"{name}: {why}" for name, why in failures.items())


# ------------------------------------------------------------------------------------ the walker itself
def _write(root: Path, files: Mapping[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_the_walker_finds_cycles_layering_breaches_and_lazy_imports(tmp_path: Path) -> None:
    """A synthetic tree with one of each problem, and a real circular import that fails on import."""
    _write(tmp_path, {
        "src/zaugnet/__init__.py": "",
        "src/zaugnet/alpha.py": "from . import beta\n",  # a submodule named in `from PKG import NAME`
        "src/zaugnet/beta.py": "from .sub.gamma import VALUE\n",
        "src/zaugnet/sub/__init__.py": "",
        "src/zaugnet/sub/gamma.py": "from ..alpha import beta\nVALUE = 1\n",  # alpha -> beta -> gamma -> alpha
        "src/zaugnet/plain.py": "import zaugnet.sub.gamma\n",  # into the cycle, not part of it
        "src/zaugnet/layered.py": "from zaugnet.training import nets\n\ndef f():\n    from zaugnet import plain\n",
        "src/zaugnet/cli.py": "def main():\n    from zaugnet.export import load\n",  # allowed: the CLI
        "training/__init__.py": "",
        "training/nets.py": "import numpy\n\ndef g():\n    import zaugnet.plain\n",
        "export/__init__.py": "",
        "export/load.py": "def h():\n    from .onnx import run\n    from . import other\n",
        "export/onnx.py": "",
        "export/other.py": "",
    })
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools]\npackage-dir = { "zaugnet" = "src/zaugnet", "zaugnet.training" = "training", '
        '"zaugnet.export" = "export" }\n')
    modules = module_files(package_roots(tmp_path / "pyproject.toml"))
    assert set(modules) == {"zaugnet", "zaugnet.alpha", "zaugnet.beta", "zaugnet.sub", "zaugnet.sub.gamma",
                            "zaugnet.plain", "zaugnet.layered", "zaugnet.cli", TRAINING, "zaugnet.training.nets",
                            EXPORT, "zaugnet.export.load", "zaugnet.export.onnx", "zaugnet.export.other"}
    imports = all_imports(modules)
    assert Import("zaugnet.alpha", "zaugnet.beta", 1, False) in imports  # not zaugnet (the package)
    assert Import("zaugnet.sub.gamma", "zaugnet.alpha", 1, False) in imports  # `beta` is an attribute there

    cycles = cycle_problems(imports)
    assert len(cycles) == 1, cycles
    assert cycles[0].startswith("zaugnet.alpha -> zaugnet.beta -> zaugnet.sub.gamma -> zaugnet.alpha: ")
    assert "zaugnet.sub.gamma (line 1) imports zaugnet.alpha" in cycles[0]
    assert layering_problems(imports) == ["zaugnet.layered (line 1) imports zaugnet.training.nets"]
    assert lazy_problems(imports) == [  # the CLI's lazy import and LAZY_EXPORT's are not reported
        "zaugnet.export.load (line 3, in a function) imports zaugnet.export.other",
        "zaugnet.layered (line 4, in a function) imports zaugnet.plain",
        "zaugnet.training.nets (line 4, in a function) imports zaugnet.plain",
    ]
    # without the cycle nothing is reported
    assert cycle_problems([i for i in imports if i.source != "zaugnet.sub.gamma"]) == []

    # the same cycle imported for real fails, as the fresh-interpreter check would report it (-S: without
    # site-packages, whose editable install would find the real zaugnet first)
    proc = subprocess.run([sys.executable, "-S", "-c", _IMPORT_EACH_FIRST, json.dumps(["zaugnet.alpha"])],
                          capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(tmp_path / "src"), "PATH": "/usr/bin:/bin"})
    failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(failures) == ["zaugnet.alpha"] and "circular import" in failures["zaugnet.alpha"], failures
