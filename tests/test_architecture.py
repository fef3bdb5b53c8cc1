"""The package's shape: imports go one way (import-linter contracts in pyproject.toml), no module imports itself
through a circle, ruff is clean, and the command line answers `--help` without loading torch."""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from lstmvision.cli import COMMANDS
from lstmvision.commands.analysis.corruptions import CORRUPTIONS
from lstmvision.constants import CORRUPTION_NAMES
from lstmvision.engine.settings import TASK_NAMES
from lstmvision.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (it is in the [test] extra)")
    return path


def test_import_contracts_are_kept():
    out = subprocess.run([_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


def test_ruff_is_clean_on_src_tests_scripts_and_benchmarks():
    out = subprocess.run([_tool("ruff"), "check", "src", "tests", "scripts", "benchmarks"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
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


def test_no_import_cycles_between_modules():
    graph = grimp.build_graph("lstmvision", exclude_type_checking_imports=True)
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "circ"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from circ import b\n")
    (pkg / "b.py").write_text("from circ import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _cycles(grimp.build_graph("circ")) == [["circ.a", "circ.b"]]


_PROBE = """
import json, sys
from lstmvision.cli import main
for argv in json.loads(sys.argv[1]):
    try:
        main(argv)
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in ("torch", "timm", "numpy") if m in sys.modules)))
"""


def test_help_does_not_import_torch():
    argvs = [["--help"]] + [[name, "--help"] for name in COMMANDS] + [[task, action, "--help"] for task in (
        "segment", "detect") for action in ("train", "validate", "predict", "scenes")]
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argvs)], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    assert "usage: lstmvision train" in out.stdout and "--checkpoint-steps" in out.stdout


def test_python_m_lstmvision_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "lstmvision", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("lstmvision ")


def test_abbreviated_flags_are_refused():
    out = subprocess.run([sys.executable, "-m", "lstmvision", "train", "--batch-siz", "8"], capture_output=True,
                         text=True)
    assert out.returncode == 2 and "unrecognized arguments: --batch-siz" in out.stderr


def test_vocabularies_match_their_implementations():
    assert tuple(TASKS) == TASK_NAMES
    assert tuple(CORRUPTIONS) == CORRUPTION_NAMES


def test_release_files_are_present():
    for name in ("LICENSE", "CHANGELOG.md", "src/lstmvision/py.typed", "src/lstmvision/__main__.py"):
        assert (ROOT / name).is_file(), name
    assert "Apache License" in (ROOT / "LICENSE").read_text()


def private_imports(src: Path) -> list[str]:
    """`from lstmvision.X import _name` across modules, where `_name` is not a submodule of X: a module's
    private helpers stay its own (a private submodule inside its own package is fine)."""
    found = []
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or node.level or not (node.module or "").startswith("lstmvision"):
                continue
            where = src / node.module.replace(".", "/")
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                submodule = (where / f"{alias.name}.py").is_file() or (where / alias.name).is_dir()
                if private and not submodule:
                    found.append(f"{path.relative_to(src)}: from {node.module} import {alias.name}")
    return found


def test_no_module_imports_another_modules_private_names(tmp_path):
    assert not private_imports(ROOT / "src"), "\n".join(private_imports(ROOT / "src"))
    (tmp_path / "lstmvision" / "a").mkdir(parents=True)
    (tmp_path / "lstmvision" / "a" / "_sub.py").write_text("")
    (tmp_path / "lstmvision" / "b.py").write_text("from lstmvision.a import _sub\nfrom lstmvision.a import _helper\n")
    assert private_imports(tmp_path) == ["lstmvision/b.py: from lstmvision.a import _helper"]
