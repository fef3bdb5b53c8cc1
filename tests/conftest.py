import os
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Weight caches of this test session only: nothing a user downloaded is read, nothing is left behind.
_CACHES = tempfile.mkdtemp(prefix="lstmvision-test-caches-")
os.environ["HF_HOME"] = os.path.join(_CACHES, "hf")
os.environ["TORCH_HOME"] = os.path.join(_CACHES, "torch")
ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("LSTMVISION_REFERENCE_DIR", ROOT / "tests" / "fixtures" / "reference"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """One compute thread: on a shared 2-core machine two threads stall each other for seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturb_(model: torch.nn.Module, scale: float = 0.02, seed: int = 0) -> torch.nn.Module:
    """Add noise to every parameter so that no output is trivially zero (the heads start at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


FAST_TIER_LIMIT_S = 5.0  # an unmarked test slower than this belongs to the slow tier (README, Development)


def pytest_terminal_summary(terminalreporter) -> None:
    """After a run, name the tests without the `slow` mark that took longer than FAST_TIER_LIMIT_S, so that the fast
    tier (`pytest -m "not slow"`) stays fast. A list, not a failure: durations depend on the machine's load."""
    reports = terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
    long = sorted(((r.duration, r.nodeid) for r in reports
                   if r.when == "call" and "slow" not in r.keywords and r.duration > FAST_TIER_LIMIT_S), reverse=True)
    if long:
        terminalreporter.section(f"unmarked tests over {FAST_TIER_LIMIT_S:g} s (mark them @pytest.mark.slow?)")
        for duration, nodeid in long:
            terminalreporter.write_line(f"{duration:6.1f} s  {nodeid}")
