"""The output rule (`lstmvision.outputs`), command by command: no command replaces a file it reads (data,
annotations, checkpoint files and configs, the exported weights), even with --overwrite; an existing output is
replaced only with --overwrite; each refusal is one line and exit status 2, with the input byte for byte intact.
Tiny random-weight checkpoints saved as run folders: no training, the whole table runs in seconds."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine_helpers import write_idx_folder, write_image_folder
from lstmvision import create_model, save_pretrained
from lstmvision.cli import main
from lstmvision.data.scenes import make_detection_scenes, make_scenes
from lstmvision.models.detection import create_detector
from lstmvision.models.upernet import create_segmenter
from lstmvision.outputs import check_outputs, check_run_folder, checkpoint_reads

pytestmark = pytest.mark.usefixtures("one_thread")


def _run_folder(model: torch.nn.Module, run: Path, class_names: list[str] | None = None) -> Path:
    """A training run folder as the engine leaves it: best/ and last/ checkpoints, config.yaml, summary.csv."""
    for name in ("best", "last"):
        save_pretrained(model, run / name, class_names=class_names)
    (run / "config.yaml").write_text("model: x\n")
    (run / "summary.csv").write_text("epoch,loss\n0,1.0\n")
    return run


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("outputs")
    fmnist = write_idx_folder(root / "fmnist", 64, 32)
    clf = create_model("sequencer2d_tiny", num_classes=10, in_chans=1, img_size=32)
    seg = create_segmenter("sequencer2d_tiny", 11, in_chans=3, img_size=32, decoder_channels=16)
    seg.pretrained_cfg = dict(seg.pretrained_cfg, task="segment", seg_base_size=[64, 32], seg_stride=16,
                              num_classes=11, mean=(0.5,) * 3, std=(0.5,) * 3)
    det_scenes = root / "det"
    make_detection_scenes(det_scenes, n_train=2, n_val=2, size=64, seed=0, source=fmnist, progress=False)
    det = create_detector("sequencer2d_tiny", "fasterrcnn", 10, img_size=64, fpn_channels=32)
    det.pretrained_cfg = dict(det.pretrained_cfg, task="detect")
    seg_scenes = root / "seg"
    make_scenes(seg_scenes, n_train=2, n_val=2, size=32, seed=0, source=fmnist, progress=False)
    images = root / "images"
    for k in range(2):
        images.mkdir(exist_ok=True)
        Image.fromarray(np.random.default_rng(k).integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(
            images / f"img{k}.png")
    weights = root / "weights.pt"
    torch.save(clf.state_dict(), weights)
    return dict(root=root, fmnist=fmnist, data=write_image_folder(root / "folder", 2), images=images,
                weights=weights, det_scenes=det_scenes, seg_scenes=seg_scenes,
                clf=_run_folder(clf, root / "clf_run"),
                seg=_run_folder(seg, root / "seg_run"),
                det=_run_folder(det, root / "det_run"))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refused(capsys, argv: list[str], kept: Path, words: str) -> None:
    """`argv` exits 2 with one error line containing `words`, and `kept` is unchanged."""
    before = _digest(kept)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ": error: " in err[0] and words in err[0], err
    assert _digest(kept) == before, f"{kept} changed"


# command -> (argv, the file that must survive). {X} are paths of the `world` fixture.
READS = {
    "validate results-file = checkpoint config":
        ("validate --checkpoint {clf} --data {data} --results-file {clf}/best/config.json --overwrite",
         "{clf}/best/config.json"),
    "validate results-file = checkpoint weights (csv name)":
        ("validate --initial-checkpoint {weights} -m sequencer2d_tiny --num-classes 10 --in-chans 1 --data {data} "
         "--results-file {data}/train/bag/labels.csv --overwrite", "{data}/train/bag/labels.csv"),
    "detect validate results-file = annotations":
        ("detect validate --checkpoint {det} --data {det_scenes} "
         "--results-file {det_scenes}/annotations/instances_val2017.json --overwrite",
         "{det_scenes}/annotations/instances_val2017.json"),
    "detect validate results-file = checkpoint config":
        ("detect validate --checkpoint {det} --data {det_scenes} --results-file {det}/best/config.json "
         "--overwrite", "{det}/best/config.json"),
    "detect predict output = annotations":
        ("detect predict --checkpoint {det} --data {det_scenes} --output "
         "{det_scenes}/annotations/instances_train2017.json --overwrite",
         "{det_scenes}/annotations/instances_train2017.json"),
    "segment validate output = checkpoint folder":
        ("segment validate --checkpoint {seg} --data {seg_scenes} --output {seg}/best --overwrite",
         "{seg}/best/segment_val.json"),
    "export = the weights exported (run folder)":
        ("export --checkpoint {clf} -o {clf}/best/model.safetensors --format torchscript --overwrite",
         "{clf}/best/model.safetensors"),
    "export = the weights exported (file)":
        ("export -m sequencer2d_tiny --num-classes 10 --in-chans 1 --initial-checkpoint {weights} -o {weights} "
         "--format torchscript --overwrite", "{weights}"),
    "memory report = checkpoint config":
        ("memory --checkpoint {clf}/best --sizes 32 --no-throughput --output {clf}/best --overwrite",
         "{clf}/best/config.json"),
}


@pytest.mark.parametrize("case", sorted(READS))
def test_an_input_is_never_replaced(world, capsys, case):
    argv, kept = READS[case]
    fmt = {k: str(v) for k, v in world.items()}
    kept = Path(kept.format(**fmt))
    kept.parent.mkdir(parents=True, exist_ok=True)
    if not kept.exists():  # a file inside a folder the command reads
        kept.write_text("a, b\n1, 2\n")
    if case.startswith("memory"):  # the report's own name, in the checkpoint folder it reads
        kept = kept.parent / "memory.json"
        kept.write_text("{}")
    _refused(capsys, argv.format(**fmt).split(), kept, "an input of this command is never replaced")


def _earlier(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"earlier": true}\n')
    return path


# command -> (argv without --overwrite, the existing output); --overwrite is then appended and must replace it
EXISTING = {
    "validate --results-file":
        ("validate --checkpoint {clf} --data {fmnist} --limit-val 4 -b 4 --results-file {out}/val.json",
         "{out}/val.json"),
    "detect validate --results-file":
        ("detect validate --checkpoint {det} --data {det_scenes} --results-file {out}/det.json", "{out}/det.json"),
    "detect predict --output":
        ("detect predict --checkpoint {det} --data {det_scenes} --output {out}/preds.json", "{out}/preds.json"),
    "segment validate --output":
        ("segment validate --checkpoint {seg} --data {seg_scenes} --output {out}", "{out}/segment_val.json"),
    "resolution-sweep --output":
        ("resolution-sweep --checkpoint {clf} --data {fmnist} --limit 4 --sizes 32 --output {out}",
         "{out}/resolution.json"),
    "erf --output":
        ("erf --checkpoint {clf} --data {fmnist} --images 2 --img-size 32 --output {out}", "{out}/erf.json"),
    "robustness --output":
        ("robustness --checkpoint {clf} --data {fmnist} --limit 4 --img-size 32 --corruptions gaussian_noise "
         "--severities 1 --imagenet no --output {out}", "{out}/robustness.json"),
    "memory --output":
        ("memory --checkpoint {clf} --sizes 32 --no-throughput --output {out}", "{out}/memory.json"),
    "benchmark --json":
        ("benchmark -m sequencer2d_tiny --img-size 32 --batch-size 1 --warmup 0 --iters 1 --no-macs --device cpu "
         "--json {out}/bench.json", "{out}/bench.json"),
}


@pytest.mark.parametrize("case", sorted(EXISTING))
def test_an_existing_output_needs_overwrite(world, capsys, tmp_path, case):
    argv, existing = EXISTING[case]
    fmt = {**{k: str(v) for k, v in world.items()}, "out": str(tmp_path / "out")}
    existing = _earlier(Path(existing.format(**fmt)))
    argv = argv.format(**fmt).split()
    _refused(capsys, argv, existing, "give --overwrite")
    assert main([*argv, "--overwrite"]) == 0, capsys.readouterr().err
    assert "earlier" not in existing.read_text()
    leftovers = [p.name for p in existing.parent.iterdir() if ".tmp" in p.name]
    assert not leftovers, f"temporary files left: {leftovers}"


def test_predict_output_folder_equal_to_the_images_is_refused(world, capsys, tmp_path):
    images = tmp_path / "pin"
    images.mkdir()
    for p in world["images"].iterdir():
        (images / p.name).write_bytes(p.read_bytes())
    for argv in (["segment", "predict", str(images), "--checkpoint", str(world["seg"]), "--output", str(images)],
                 ["detect", "predict", str(images), "--checkpoint", str(world["det"]), "--save-vis", str(images)],
                 ["detect", "predict", str(images), "--checkpoint", str(world["det"]), "--save-vis",
                  str(images / "sub" / "..")]):
        _refused(capsys, argv, images / "img0.png", "is the input folder")
    assert sorted(p.name for p in images.iterdir()) == ["img0.png", "img1.png"]


def test_train_never_writes_its_run_over_its_initial_checkpoint(world, capsys, tmp_path):
    runs = tmp_path / "runs"
    saved = runs / "x"
    save_pretrained(create_model("sequencer2d_tiny", num_classes=10, in_chans=1), saved / "best")
    argv = ["train", "--initial-checkpoint", str(saved / "best"), "--data", str(world["fmnist"]), "--output",
            str(runs), "--experiment", "x", "--epochs", "1", "--img-size", "28"]
    _refused(capsys, argv, saved / "best" / "model.safetensors", "an input of this run")
    argv = [*argv[:-6], "--output", str(saved / "best"), "--experiment", "inside", "--epochs", "1"]
    _refused(capsys, argv, saved / "best" / "model.safetensors", "an input of this run")


def test_scenes_and_transfer_stay_outside_their_inputs(world, capsys, tmp_path):
    source = tmp_path / "idx"
    write_idx_folder(source, 16, 8)
    kept = source / "train-images-idx3-ubyte"
    for command in ("segment", "detect"):
        _refused(capsys, [command, "scenes", "--source", str(source), "--output", str(source), "--train", "1",
                          "--val", "1"], kept, "is the input folder")
    _refused(capsys, ["transfer", "--initial-checkpoint", str(world["clf"]), "--data", str(source), "--output",
                      str(source), "--epochs", "1", "--train-size", "4", "--val-size", "2", "--lrs", "1e-3"],
             kept, "is the input folder")


# ------------------------------------------------------------------------------------- the helper itself
def test_check_outputs_sees_links_and_folders(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.json").write_text("{}")
    link = tmp_path / "link.json"
    os.symlink(data / "a.json", link)
    with pytest.raises(FileExistsError, match="would replace the input"):
        check_outputs([link], [data / "a.json"], overwrite=True)
    with pytest.raises(FileExistsError, match="would replace a file inside the input"):
        check_outputs([tmp_path / "." / "data" / "a.json"], [data], overwrite=True)
    assert check_outputs([data / "new.json"], [data]) == [data / "new.json"]  # a new file next to the inputs
    with pytest.raises(IsADirectoryError):
        check_outputs([data], [])
    with pytest.raises(NotADirectoryError):
        check_outputs([data / "a.json" / "x.json"], [])


def test_checkpoint_reads_of_a_run_folder_are_its_checkpoints(world):
    reads = checkpoint_reads(world["clf"])
    assert world["clf"] / "best" in reads and world["clf"] / "last" in reads
    assert world["clf"] not in reads  # new files beside the checkpoints (val.json) stay possible
    assert checkpoint_reads(world["weights"]) == [world["weights"]]
    assert checkpoint_reads(None) == []
    with pytest.raises(FileExistsError):
        check_run_folder(world["clf"], checkpoint_reads(world["clf"] / "best"))
    assert check_run_folder(world["root"] / "new", checkpoint_reads(world["clf"])) == world["root"] / "new"


def test_validate_writes_its_results_through_a_temp_file(world, tmp_path):
    out = tmp_path / "v.json"
    assert main(["validate", "--checkpoint", str(world["clf"]), "--data", str(world["fmnist"]), "--limit-val", "4",
                 "-b", "4", "--results-file", str(out)]) == 0
    assert json.loads(out.read_text())["model"]
    assert [p.name for p in tmp_path.iterdir()] == ["v.json"]


def test_check_kernels_json_needs_overwrite(tmp_path, capsys):
    existing = _earlier(tmp_path / "ck.json")
    argv = ["check-kernels", "--dtype", "fp32", "--backend", "recurrent", "--json", str(existing)]
    _refused(capsys, argv, existing, "give --overwrite")
    assert main([*argv, "--overwrite"]) == 0
    assert json.loads(existing.read_text())["passed"]


def test_an_analysis_of_a_model_with_too_few_classes_says_why(world, capsys, tmp_path):
    """A label the model has no class for: the size is reported n/a with the reason (was an IndexError)."""
    save_pretrained(create_model("sequencer2d_tiny", num_classes=3, in_chans=1), tmp_path / "three")
    rc = main(["resolution-sweep", "--checkpoint", str(tmp_path / "three"), "--data", str(world["fmnist"]),
               "--limit", "8", "--sizes", "32", "--output", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc == 0 and "Traceback" not in err
    assert "not evaluated (the data has a label" in out and "but the model predicts 3 classes" in out
    assert json.loads((tmp_path / "out" / "resolution.json").read_text())["results"][0]["top1"] == {"32": None}
