"""The documentation site builds in strict mode (no broken link, anchor, nav entry or API reference), and its
generated pages cover the code: the model zoo lists every registered model, the CLI reference every command."""
from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

# The docs extra (scripts/setup.sh installs it): a missing tool fails here, it is not skipped.
import material  # noqa: E402, F401
import mkdocs  # noqa: E402, F401
import mkdocstrings_handlers.python  # noqa: E402, F401
import pytest

import lstmvision
from lstmvision.cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # every test reads the site that `mkdocs build` (a process) writes


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return out


def page_text(site: Path, page: str) -> str:
    """The text of a built page's article (tags removed, entities decoded)."""
    raw = (site / page / "index.html").read_text(encoding="utf-8")
    article = re.search(r"<article.*?</article>", raw, re.S)
    assert article, f"{page}: no article in the built page"
    return html.unescape(re.sub(r"<[^>]+>", " ", article.group(0)))


@pytest.mark.timeout(300)
def test_site_builds_with_every_page(site: Path) -> None:
    for page in ("getting-started", "models", "cli", "api", "results", "architecture", "training", "segmentation",
                 "detection", "transfer", "vision-lstm", "deployment", "performance", "analyses", "evaluation"):
        assert (site / page / "index.html").is_file(), page
    assert (site / "index.html").is_file()
    for page in ("results", "detection"):  # the pictures of results/ (copied by docs/hooks.py)
        text = (site / page / "index.html").read_text(encoding="utf-8")
        for src in re.findall(r'<img[^>]+src="([^"]+)"', text):
            assert (site / page / src).resolve().is_file(), f"{page} page shows a missing image {src}"


@pytest.mark.timeout(300)
def test_zoo_lists_every_registered_model(site: Path) -> None:
    text = page_text(site, "models")
    listed = set(re.findall(r"[\w.]+", text))
    missing = [name for name in lstmvision.list_models() if name not in listed]
    assert not missing, f"models missing from the zoo page: {missing}"


@pytest.mark.timeout(300)
def test_cli_reference_covers_every_command(site: Path) -> None:
    text = page_text(site, "cli")
    for command in COMMANDS:
        assert f"usage: lstmvision {command}" in text, f"`lstmvision {command} --help` missing from the CLI page"
    assert "usage: lstmvision segment train" in text
    assert "usage: lstmvision detect train" in text and "usage: lstmvision detect predict" in text
