"""`import lstmvision` makes every lstmvision model creatable by `timm.create_model(NAME)`, whatever is imported
first and by whom (timm itself, segmentation_models_pytorch, transformers, lstmvision's own modules), without
importing torch or timm itself; names timm already has stay timm's; `register_timm()` stays callable."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import timm

import lstmvision

_TINY = "dict(embed_dim=32, depth=2, img_size=32)"
_CHECK = f"""
import json, sys, timm
from timm.models import is_model
m = timm.create_model("vil2_tiny", num_classes=3, **{_TINY})
finders = [type(f).__name__ for f in sys.meta_path if type(f).__module__ == "lstmvision"]
print(json.dumps(dict(cls=type(m).__module__, seq=type(timm.create_model("sequencer2d_s", layers=(1, 1, 1, 1))).__module__,
                      names=[n for n in ("v_sequencer_s", "vil_tiny_pool_avg", "sequencer2d_tiny") if is_model(n)],
                      finders=finders, loader=type(timm.__spec__.loader).__module__,
                      again=__import__("lstmvision").register_timm())))
"""
_ORDERS = {
    "lstmvision then timm": "import lstmvision\nassert 'torch' not in sys.modules and 'timm' not in sys.modules\n",
    "timm then lstmvision": "import timm\nimport lstmvision\n",
    "a submodule first": "import lstmvision.weights\n",
    "smp imports timm": "import lstmvision\nimport segmentation_models_pytorch\n",
    "transformers imports timm": "import lstmvision\nfrom transformers import TimmBackbone\n",
}


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "could not register" not in out.stderr, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_models_are_registered_in_this_process():
    assert timm.is_model("vil2_tiny") and timm.is_model("v_sequencer_s")
    assert lstmvision.register_timm() == []  # already done at import: a no-op
    assert type(timm.create_model("sequencer2d_s", layers=(1, 1, 1, 1))).__module__ == "timm.models.sequencer"


@pytest.mark.slow
@pytest.mark.parametrize("order", list(_ORDERS))
def test_timm_creates_lstmvision_models_after_import(order):
    result = _run("import sys\n" + _ORDERS[order] + _CHECK)
    assert result["cls"] == "lstmvision.models.vil" and result["seq"] == "timm.models.sequencer"
    assert result["names"] == ["v_sequencer_s", "vil_tiny_pool_avg", "sequencer2d_tiny"]
    assert result["finders"] == [] and result["loader"] != "lstmvision"  # the import hook is gone once done
    assert result["again"] == []


@pytest.mark.slow
def test_import_loads_neither_torch_nor_timm():
    code = "import json, sys, lstmvision\nprint(json.dumps(sorted(m for m in ('torch', 'timm') if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and json.loads(out.stdout) == [], out.stderr[-2000:]
