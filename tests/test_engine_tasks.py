"""The engine's task layer: classification model building and task lookup."""
import pytest

from lstmvision import create_model, save_pretrained
from lstmvision.engine.recipes import DEFAULTS
from lstmvision.tasks import get_task
from lstmvision.tasks.classify import ClassificationTask, build_model


def _drop_path_rates(model) -> list[float]:
    return [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]


def test_fine_tuning_takes_the_runs_drop_path_not_the_checkpoints(tmp_path):
    save_pretrained(create_model("sequencer2d_tiny", num_classes=10, in_chans=1, drop_path_rate=0.2), tmp_path / "m")
    cfg = dict(DEFAULTS, initial_checkpoint=str(tmp_path / "m"), img_size=28, mean=[0.5], std=[0.25], drop_path=0.0)
    assert all(r == 0 for r in _drop_path_rates(build_model(cfg, 10, 1, [str(i) for i in range(10)])))
    cfg["drop_path"] = 0.1
    assert max(_drop_path_rates(build_model(cfg, 10, 1, [str(i) for i in range(10)]))) == pytest.approx(0.1)


def test_get_task():
    assert isinstance(get_task(None), ClassificationTask) and get_task("segment").score == "miou"
    assert get_task("detect").score == "bbox_mAP"
    with pytest.raises(ValueError, match="unknown task"):
        get_task("caption")
