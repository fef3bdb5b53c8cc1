"""The fast tier (`pytest -m "not slow"`) stays fast: every test that starts a process running torch — torchrun,
a training that is killed, the Triton interpreter, a `mkdocs build` — is marked slow, on itself or by its module's
`pytestmark`. (conftest.py also lists, after a run, every unmarked test that took over FAST_TIER_LIMIT_S.)"""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SPAWNS = ("torchrun", "Popen(", '"TRITON_INTERPRET": "1"', '"mkdocs", "build"')


def _is_slow_mark(node: ast.expr) -> bool:
    return "pytest.mark.slow" in ast.unparse(node)


def unmarked_spawning_tests(source: str) -> list[str]:
    """The test functions of a module's source that start one of SPAWNS but carry no slow mark."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets):
            if _is_slow_mark(node.value):
                return []
    out = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            code = ast.get_source_segment(source, node) or ""
            if any(s in code for s in SPAWNS) and not any(_is_slow_mark(d) for d in node.decorator_list):
                out.append(node.name)
    return out


def test_every_test_that_spawns_torch_is_marked_slow() -> None:
    missing = [f"{path.name}::{name}" for path in sorted(TESTS.glob("test_*.py")) if path.name != Path(__file__).name
               for name in unmarked_spawning_tests(path.read_text(encoding="utf-8"))]
    assert not missing, f"these tests start a process running torch; mark them @pytest.mark.slow: {missing}"


def test_the_check_sees_marks_and_spawns() -> None:
    spawn = 'def test_a():\n    subprocess.Popen(["x"])\n'
    assert unmarked_spawning_tests(spawn) == ["test_a"]
    assert unmarked_spawning_tests("import pytest\n@pytest.mark.slow\n" + spawn) == []
    assert unmarked_spawning_tests("import pytest\npytestmark = [pytest.mark.slow]\n" + spawn) == []
    assert unmarked_spawning_tests('def test_b():\n    run(["ruff", "check"])\n') == []
