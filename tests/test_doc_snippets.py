"""Every code block of README.md and docs/*.md runs as written, or says why not.

A ```bash block runs with `bash` (`set -e -o pipefail`), a ```python block with this Python, each in a fresh
process, all in one shared temporary working directory: getting-started first (it writes `runs/quick`,
`samples/`, `data/fmnist-scenes`, ...), then the other pages, README.md last. `.venv/bin` (this Python's folder)
leads PATH and HF_HUB_OFFLINE=1 is set; the released weights the snippets load are stand-ins with random weights
in the caches the test points HF_HOME / TORCH_HOME to (a Hub snapshot of timm/sequencer2d_s.in1k), and the file
the skipped ViL download fetches is put where it would land.

A block that cannot run here (data that is not here, a GPU, the network, a long demo) is marked by name: an HTML
comment `<!-- skip: REASON -->` on the line before it, and the words of REASON must also be in the prose next to
it, so the reader sees why. Blocks that are no commands (diagrams, sample output) are fenced as ```text. Any other
fence, or an unmarked block that fails, fails the test.

`LSTMVISION_DOC_TIMINGS=PATH.json` writes how long each block took (wall and CPU seconds, with the machine's
load average before and after) to PATH.
"""
from __future__ import annotations

import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hub_server import COMMIT
from lstmvision.data import find_idx_files
from lstmvision.models.registry import build_model

ROOT = Path(__file__).resolve().parents[1]
FIRST_PAGE = "docs/getting-started.md"
DATA = Path("/usr/share/datasets/fashion-mnist")
TIMINGS_ENV = "LSTMVISION_DOC_TIMINGS"
RUNNERS = {"bash": ["bash", "-c"], "python": [sys.executable, "-c"]}
NOT_RUN = {"text"}
BLOCK_TIMEOUT_S = 600
NEARBY_LINES = 15  # prose above a skip marker and below its block that must give the reason
STOPWORDS = {"a", "an", "the", "and", "or", "of", "on", "in", "to", "with", "for", "is", "needs", "need"}
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
SKIP = re.compile(r"^\s*<!--\s*skip:\s*(.*?)\s*-->\s*$")
COMMENT = re.compile(r"<!--.*?-->")


@dataclass
class Block:
    page: str
    line: int  # of the opening fence, from 1
    end: int  # of the closing fence
    lang: str
    code: str
    skip: str | None  # the reason of a `<!-- skip: REASON -->` marker on the line before
    marker: int | None  # line of that marker

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[str]:
    """getting-started first (the others use what it writes), the other pages, README.md last."""
    docs = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))
    docs.remove(FIRST_PAGE)
    return [FIRST_PAGE, *docs, "README.md"]


def parse(text: str, page: str) -> tuple[list[Block], list[str]]:
    """The fenced blocks of a Markdown page, and its problems (an unclosed fence, a marker without a block)."""
    lines = text.splitlines()
    blocks, problems, i = [], [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        marker = SKIP.match(lines[i])
        if marker and not (i + 1 < len(lines) and FENCE.match(lines[i + 1])):
            problems.append(f"{page}:{i + 1}: a skip marker must be on the line right before a code block")
        if not opening:
            i += 1
            continue
        indent, lang = opening.groups()
        close = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if close is None:
            problems.append(f"{page}:{i + 1}: the code block is never closed")
            break
        code = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1:close])
        before = SKIP.match(lines[i - 1]) if i > 0 else None
        blocks.append(Block(page, i + 1, close + 1, lang, code + "\n", before.group(1) if before else None,
                            i if before else None))
        i = close + 1
    return blocks, problems


def prose_lines(text: str) -> list[str]:
    """The page's lines as the reader sees them in prose: code blocks and HTML comments blanked."""
    out, inside = [], False
    for line in text.splitlines():
        fence = line.strip() == "```" if inside else FENCE.match(line) is not None
        out.append("" if inside or fence else COMMENT.sub("", line))
        inside = inside != fence
    return out


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower())) - STOPWORDS


def unexplained_skip(block: Block, prose: list[str]) -> set[str]:
    """The words of a block's skip reason that the prose next to it (above the marker, below the block) lacks."""
    above = prose[max(0, block.marker - 1 - NEARBY_LINES):block.marker - 1]
    below = prose[block.end:block.end + NEARBY_LINES]
    return words(block.skip) - words(" ".join(above + below))


def check_page(page: str) -> list[str]:
    text = (ROOT / page).read_text(encoding="utf-8")
    blocks, problems = parse(text, page)
    prose = prose_lines(text)
    for b in blocks:
        if b.lang not in RUNNERS and b.lang not in NOT_RUN:
            problems.append(f"{b.name}: a ```{b.lang} block: fence commands as bash or python, anything else as "
                            "text")
        elif b.skip is not None and b.lang in NOT_RUN:
            problems.append(f"{b.name}: a text block is never run; drop its skip marker")
        elif b.skip is not None and not words(b.skip):
            problems.append(f"{b.name}: the skip marker gives no reason")
        elif b.skip is not None and unexplained_skip(b, prose):
            missing = ", ".join(sorted(unexplained_skip(b, prose)))
            problems.append(f"{b.name}: skipped because '{b.skip}', but the text next to it does not say so "
                            f"({missing} missing)")
    return problems


# ------------------------------------------------------------------------------------------------ running
def run_block(block: Block, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    code = f"set -e -o pipefail\n{block.code}" if block.lang == "bash" else block.code
    try:
        return subprocess.run([*RUNNERS[block.lang], code], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return subprocess.CompletedProcess(e.cmd, 124, out, f"timed out after {BLOCK_TIMEOUT_S} s")


def snippet_env(caches: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_ENDPOINT", "PYTHONPATH")}
    env.update(PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]), HF_HUB_OFFLINE="1",
               HF_HOME=str(caches / "hf"), TORCH_HOME=str(caches / "torch"), HF_HUB_DISABLE_TELEMETRY="1")
    return env


def place_released_weights(caches: Path, work: Path) -> None:
    """Stand-ins (random weights, the publishers' layouts and names) for the released weights the snippets load:
    timm/sequencer2d_s.in1k as a Hugging Face cache snapshot (what `pretrained=True` reads offline), and the ViL
    file the skipped download on the Vision-LSTM page writes into the working directory."""
    torch.manual_seed(0)
    snapshot = caches / "hf" / "hub" / "models--timm--sequencer2d_s.in1k"
    (snapshot / "snapshots" / COMMIT).mkdir(parents=True)
    (snapshot / "refs").mkdir()
    (snapshot / "refs" / "main").write_text(COMMIT)
    seq = build_model("sequencer2d_s").state_dict()
    save_file({k: v.contiguous() for k, v in seq.items()}, str(snapshot / "snapshots" / COMMIT / "model.safetensors"))
    torch.save({"state_dict": build_model("vil2_tiny").state_dict()}, work / "vil2_tiny16_e800_in1k.th")


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes: a block's work, less the machine's load."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _tail(proc: subprocess.CompletedProcess) -> str:
    return f"{(proc.stdout or '')[-1500:]}\n{(proc.stderr or '')[-3000:]}"


def write_timings(path: str, rows: list[dict], skipped: list[dict], load_before: tuple[float, ...],
                  total: float) -> None:
    machine = dict(cpus=os.cpu_count(), platform=platform.platform(), processor=platform.processor(),
                   python=platform.python_version(), torch=torch.__version__,
                   load_average_before=[round(x, 2) for x in load_before],
                   load_average_after=[round(x, 2) for x in os.getloadavg()])
    report = dict(machine=machine, total_s=round(total, 1), blocks=rows, skipped=skipped)
    Path(path).write_text(json.dumps(report, indent=1) + "\n")


# ------------------------------------------------------------------------------------------------ tests
def test_every_block_runs_or_is_skipped_by_name() -> None:
    problems = [p for page in pages() for p in check_page(page)]
    assert not problems, "\n".join(problems)


def test_checks_catch_failures_and_unexplained_skips(tmp_path: Path) -> None:
    page = ("Intro.\n\n```bash\nfalse\necho after\n```\n\nThis one needs ImageNet.\n\n<!-- skip: needs ImageNet -->\n"
            "```bash\nexit 1\n```\n\n<!-- skip: needs COCO -->\n```python\nraise SystemExit(3)\n```\n\n```\nplain\n```\n")
    blocks, problems = parse(page, "x.md")
    assert not problems and [b.lang for b in blocks] == ["bash", "bash", "python", ""]
    assert [b.skip for b in blocks] == [None, "needs ImageNet", "needs COCO", None]
    prose = prose_lines(page)
    assert not unexplained_skip(blocks[1], prose) and unexplained_skip(blocks[2], prose) == {"coco"}
    env = snippet_env(tmp_path)
    assert run_block(blocks[0], tmp_path, env).returncode != 0  # set -e: a failing command fails the block
    assert run_block(blocks[2], tmp_path, env).returncode == 3
    assert parse("<!-- skip: x -->\n\n```bash\n```\n", "y.md")[1]  # a marker not right before a block


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_doc_snippets_run(tmp_path_factory: pytest.TempPathFactory) -> None:
    assert find_idx_files(DATA, "train") is not None, f"the snippets use Fashion-MNIST at {DATA}: run setup.sh"
    assert (Path(sys.executable).parent / "lstmvision").is_file(), "run the tests with the .venv's Python"
    work, caches = tmp_path_factory.mktemp("snippets"), tmp_path_factory.mktemp("caches")
    place_released_weights(caches, work)
    env = snippet_env(caches)
    load_before, start = os.getloadavg(), time.perf_counter()
    rows, skipped, failures = [], [], []
    for page in pages():
        for block in parse((ROOT / page).read_text(encoding="utf-8"), page)[0]:
            if block.skip is not None:
                skipped.append(dict(block=block.name, reason=block.skip))
            if block.skip is not None or block.lang not in RUNNERS:
                continue
            t0, cpu0 = time.perf_counter(), _children_cpu()
            proc = run_block(block, work, env)
            seconds, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
            rows.append(dict(block=block.name, lang=block.lang, first_line=(block.code.splitlines() or [""])[0],
                             seconds=round(seconds, 1), cpu_s=round(cpu, 1), ok=proc.returncode == 0))
            if proc.returncode != 0:
                failures.append(f"{block.name} ({block.lang}) exited {proc.returncode}:\n{_tail(proc)}")
    if os.environ.get(TIMINGS_ENV):
        write_timings(os.environ[TIMINGS_ENV], rows, skipped, load_before, time.perf_counter() - start)
    assert rows and not failures, "\n\n".join(failures)
