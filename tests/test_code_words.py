"""The words about the code stay true: every `lstmvision.x.y` that a docstring, a comment, README.md or docs/
names imports (a module, or an attribute of one), and no comment or docstring speaks of how the code was made
(issues, sessions, unverified facts) instead of what it does."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
# a dotted name, not part of a path (src/lstmvision/...) or of a longer word
NAME = re.compile(r"(?<![\w./-])lstmvision(?:\.[A-Za-z_]\w*)+")
MAKING = re.compile(r"UNVERIFIED|\bGPU session\b|\bthis session\b|\bthe issue\b|\bissue \d+|\bthe 2-core CPU\b",
                    re.IGNORECASE)


def resolves(name: str) -> bool:
    """Whether `name` is an importable module, or an attribute path below the longest importable one."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for part in parts[i:]:
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True
    return False


def code_words(path: Path) -> list[str]:
    """The docstrings and comments of a Python file."""
    text = path.read_text(encoding="utf-8")
    nodes = (n for n in ast.walk(ast.parse(text))
             if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)))
    docs = [d for n in nodes if (d := ast.get_docstring(n, clean=False))]
    comments = [line.split("#", 1)[1] for line in text.splitlines() if "#" in line]
    return docs + comments


def sources() -> dict[str, list[str]]:
    texts = {str(p.relative_to(ROOT)): code_words(p) for p in sorted(SRC.rglob("*.py"))}
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        texts[str(page.relative_to(ROOT))] = [page.read_text(encoding="utf-8")]
    return texts


@pytest.fixture(scope="module")
def texts() -> dict[str, list[str]]:
    return sources()


def test_every_named_module_and_attribute_imports(texts):
    missing = sorted({f"{where}: {name}" for where, parts in texts.items() for text in parts
                      for name in (n.rstrip(".") for n in NAME.findall(text)) if not resolves(name)})
    assert not missing, "names that do not import:\n" + "\n".join(missing)


def test_no_words_about_how_the_code_was_made(texts):
    found = sorted({f"{where}: {m.group(0)!r}" for where, parts in texts.items() if where.startswith("src/")
                    for text in parts for m in MAKING.finditer(text)})
    assert not found, "say what the code does, not how it was made:\n" + "\n".join(found)


def test_the_checks_catch_what_they_should():
    assert resolves("lstmvision.outputs.check_outputs") and resolves("lstmvision.commands")
    assert not resolves("lstmvision.analysis.erf") and not resolves("lstmvision.outputs.nothing_here")
    assert NAME.findall("see `lstmvision.cli.main`, not src/lstmvision/cli.py") == ["lstmvision.cli.main"]
    assert MAKING.search("a fact that is UNVERIFIED") and not MAKING.search("verified against the fixtures")
