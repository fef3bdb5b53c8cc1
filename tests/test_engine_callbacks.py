"""`train(cfg, callbacks=...)`: the events and their order; the caller's cfg is left as it was."""
import copy

import pytest

from engine_helpers import write_idx_folder
from lstmvision.engine.callbacks import Callback
from lstmvision.engine.config import resolve_config
from lstmvision.engine.trainer import train


class Recorder(Callback):
    def __init__(self):
        self.events, self.images = [], 0

    def on_step_end(self, run, images):
        self.images += images

    def on_checkpoint(self, run, phase):
        self.events.append((run.epoch, phase))

    def on_epoch_end(self, run, row):
        self.events.append((run.epoch, f"epoch_end {row['epoch']}"))

    def on_train_end(self, run):
        self.events.append((run.epoch, "train_end"))


def _cfg(tmp_path):
    data = write_idx_folder(tmp_path / "d", 64, 32)
    return resolve_config(dict(data=str(data), output=str(tmp_path / "r"), experiment="cb", epochs=2, batch_size=16,
                               workers=0, warmup_epochs=0, checkpoint_steps=2))


@pytest.mark.slow
def test_callback_events_and_cfg_untouched(tmp_path, capsys):
    cfg = _cfg(tmp_path)
    before = copy.deepcopy(cfg)
    rec = Recorder()
    result = train(cfg, callbacks=[rec])
    assert cfg == before  # mean/std/lr_resolved go to the run's own copy (and its config.yaml)
    assert rec.images == 2 * 64 and result["global_step"] == 8
    first = rec.events[:rec.events.index((1, "epoch_end 0")) + 1]
    assert first == [
        (0, "stage:last"), (0, "publish:last"),  # mid-epoch save at step 2 (no previous last/ to swap)
        (1, "stage:best"), (1, "stage:last"), (1, "swap:last"), (1, "publish:last"), (1, "publish:best"),
        (1, "summary"), (1, "epoch_end 0"),
    ]
    assert rec.events[-1] == (2, "train_end")
    assert ((2, "publish:last") in rec.events and (2, "summary") in rec.events
            and (2, "epoch_end 1") in rec.events)
    out = capsys.readouterr().out
    run = tmp_path / "r" / "cb"
    assert f"train: saved checkpoint {run / 'last'} (epoch 0 step 2, global step 2)" in out
    assert f"train: saved checkpoint {run / 'best'} (end of epoch 0, global step 4)" in out


def test_resolve_config_takes_plain_data(tmp_path):
    """Settings come as a dict (no argparse); None means not given; a YAML file and a recipe layer under it."""
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("epochs: 3\nlr: 1e-3\n")
    cfg = resolve_config(dict(epochs=None, batch_size=16, img_size=28, in_chans=1), cfg_file, "sequencer-small")
    assert (cfg["epochs"], cfg["lr"], cfg["batch_size"], cfg["recipe"]) == (3, 1e-3, 16, "sequencer-small")
    assert resolve_config(dict(epochs=5, img_size=28, in_chans=1), cfg_file)["epochs"] == 5
