"""Faults of the output-writing commands, each a regression test: `segment predict` never replaces an input or
writes one name twice and skips unreadable images; every command says in one line when it gets the other task's
checkpoint; `export` refuses a segmenter, an existing file and a suffix that contradicts --format; -b < 1 is
refused; output paths are checked before any work and named in errors without errno text; `transfer` checks
every task's splits before the first fit. Tiny random-weight checkpoints: the whole file runs in seconds."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine_helpers import write_idx_folder, write_image_folder
from lstmvision import create_model, save_pretrained
from lstmvision.cli import main
from lstmvision.commands.segment import mask_targets
from lstmvision.models.upernet import create_segmenter


def one_error(capsys, command: str = "") -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"lstmvision {command}"), err
    assert "Errno" not in err[0] and "Traceback" not in err[0], err
    return err[0]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    seg = create_segmenter("sequencer2d_tiny", 3, in_chans=3, img_size=32, decoder_channels=16)
    seg.class_names = ["sky", "road", "car"]
    seg.pretrained_cfg = dict(seg.pretrained_cfg, task="segment", seg_base_size=[64, 32], seg_stride=16,
                              num_classes=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    save_pretrained(seg, root / "seg")
    save_pretrained(create_model("sequencer2d_tiny", num_classes=3, in_chans=3), root / "clf",
                    class_names=["bag", "coat", "shoe"])
    return dict(seg=root / "seg", clf=root / "clf")


def _image(path: Path, seed: int = 0, size=(40, 36)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def unwritable(tmp_path) -> Path:
    """A folder in which no file can be made (a read-only folder; as root, where modes do not bind, /sys)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        try:
            (folder / "probe").write_text("x")
        except OSError:
            yield folder
            return
        (folder / "probe").unlink()
        try:
            Path("/sys/kernel/lstmvision-probe").write_text("x")
        except OSError:
            yield Path("/sys/kernel")
            return
        pytest.skip("no unwritable folder here")
    finally:
        folder.chmod(0o755)


# ------------------------------------------------------------------------------ 1. segment predict outputs
def test_mask_names_are_unique_and_keep_folders(tmp_path):
    imgs = tmp_path / "imgs"
    files = [imgs / "x.png", imgs / "x.jpg", imgs / "x_color.png", imgs / "sub" / "x.png", imgs / "X.png",
             imgs / "x.png"]  # the last: the same file again
    targets = mask_targets(files, tmp_path / "out")
    assert [t.image for t in targets] == files[:5]
    out = tmp_path / "out"
    assert [t.mask for t in targets] == [out / "x.png", out / "x_2.png", out / "x_color_2.png",
                                         out / "sub" / "x.png", out / "X_3.png"]
    names = [os.path.normcase(str(p)).casefold() for t in targets for p in (t.mask, t.colour)]
    assert len(set(names)) == len(names)


def test_segment_predict_never_replaces_an_input_or_an_earlier_output(ckpts, tmp_path, capsys):
    imgs = tmp_path / "imgs"
    a, b, c = _image(imgs / "x.png", 0), _image(imgs / "sub" / "x.png", 1), _image(imgs / "x.jpg", 2)
    before = {p: p.read_bytes() for p in (a, b, c)}
    base = ["segment", "predict", "--checkpoint", str(ckpts["seg"])]
    # the input's own folder: x.png's mask would be x.png itself, refused even with --overwrite
    for extra in ([], ["--overwrite"]):
        assert main([*base, str(a), "-o", str(imgs), *extra]) == 2
        assert "would replace the input" in one_error(capsys, "segment")
    assert {p: p.read_bytes() for p in (a, b, c)} == before
    out = tmp_path / "out"
    assert main([*base, str(a), str(b), str(c), "-o", str(out)]) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["sub/x.png", "sub/x_color.png", "x.png", "x_2.png", "x_2_color.png", "x_color.png"]
    assert np.array(Image.open(out / "x.png")).shape == (40, 36)
    capsys.readouterr()
    # a second run into the same folder: refused before anything is loaded or written, unless --overwrite
    stamp = (out / "x.png").stat().st_mtime_ns
    assert main([*base, str(a), "-o", str(out)]) == 2
    assert "exists" in one_error(capsys, "segment") and (out / "x.png").stat().st_mtime_ns == stamp
    assert main([*base, str(a), "-o", str(out), "--overwrite"]) == 0
    # a folder as input: its images, with their subfolders
    assert main([*base, str(imgs), "-o", str(tmp_path / "all")]) == 0
    assert (tmp_path / "all" / "sub" / "x.png").is_file() and (tmp_path / "all" / "x_2.png").is_file()
    # masks written inside the input folder are not read back as images on the next run
    for extra in ([], ["--overwrite"]):
        assert main([*base, str(imgs), "-o", str(imgs / "masks"), *extra]) == 0
    assert not (imgs / "masks" / "masks").exists() and (imgs / "masks" / "sub" / "x.png").is_file()


# ----------------------------------------------------------------------- 2. unreadable images are skipped
def test_segment_predict_skips_unreadable_images(ckpts, tmp_path, capsys, monkeypatch):
    good = _image(tmp_path / "good.png")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    bomb = _image(tmp_path / "bomb.png", size=(120, 120))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 120 x 120 > 2 x 3000: a decompression bomb
    base = ["segment", "predict", "--checkpoint", str(ckpts["seg"]), str(junk), str(empty), str(bomb), str(good)]
    assert main([*base, "-o", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "skipped 3 unreadable image(s)" in captured.err and "DecompressionBombError" in captured.err
    assert "Traceback" not in captured.err and "good.png ->" in captured.out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png", "good_color.png"]
    assert main([*base, "-o", str(tmp_path / "strict"), "--strict-images"]) == 2
    err = one_error(capsys, "segment")
    assert "unreadable image" in err and "junk.png" in err and "--strict-images" in err
    base = ["segment", "predict", "--checkpoint", str(ckpts["seg"]), str(junk), str(empty)]
    assert main([*base, "-o", str(tmp_path / "none")]) == 2
    assert "none of the images could be read" in capsys.readouterr().err


# ------------------------------------------------------------------- 4. the other task's checkpoint, one line
@pytest.mark.parametrize("argv, kind, needle", [
    (["predict", "{img}"], "seg", "segmentation model (UperNet), not a classifier"),
    (["validate", "--data", "{data}"], "seg", "use `lstmvision segment validate`"),
    (["export", "-o", "{tmp}/m.pt"], "seg", "export takes classification models only"),
    (["export", "-o", "{tmp}/m.onnx"], "seg", "export takes classification models only"),
    (["segment", "predict", "{img}", "-o", "{tmp}/o"], "clf", "not a segmentation model"),
    (["segment", "validate", "--data", "{data}"], "clf", "not a segmentation model"),
])
def test_each_command_names_the_other_tasks_checkpoint(ckpts, tmp_path, capsys, argv, kind, needle):
    img = _image(tmp_path / "a.png")
    data = write_image_folder(tmp_path / "data", n_per_class=1)
    argv = [a.format(img=img, data=data, tmp=tmp_path) for a in argv]
    assert main([*argv, "--checkpoint", str(ckpts[kind])]) == 2
    assert needle in one_error(capsys)
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "m.onnx").exists()


# ----------------------------------------------------------------------------------- 7. export's output
def test_export_refuses_an_existing_file_and_a_contradicting_suffix(ckpts, tmp_path, capsys):
    out = tmp_path / "m.pt"
    out.write_bytes(b"keep me")
    base = ["export", "--checkpoint", str(ckpts["clf"]), "--img-size", "28"]
    assert main([*base, "-o", str(out)]) == 2
    assert "give --overwrite" in one_error(capsys, "export") and out.read_bytes() == b"keep me"
    # checked before the model is read: a missing checkpoint is not the first complaint
    assert main(["export", "--checkpoint", str(tmp_path / "nope"), "-o", str(out)]) == 2
    assert "exists" in one_error(capsys, "export")
    assert main([*base, "-o", str(tmp_path / "m.onnx"), "--format", "torchscript"]) == 2
    assert "contradicts the output name m.onnx" in one_error(capsys, "export")
    assert main([*base, "-o", str(tmp_path / "t.pt"), "--format", "onnx"]) == 2
    assert "contradicts" in one_error(capsys, "export") and not (tmp_path / "t.pt").exists()
    assert main([*base, "-o", str(out), "--overwrite"]) == 0
    assert out.read_bytes() != b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temporary file left


@pytest.mark.parametrize("argv", [
    ["predict", "--checkpoint", "{clf}", "{img}", "-b", "0"],
    ["validate", "--checkpoint", "{clf}", "-b", "0"],
    ["export", "--checkpoint", "{clf}", "-o", "{tmp}/m.onnx", "-b", "0"],
    ["transfer", "--model", "sequencer2d_tiny", "--data", "{tmp}", "-o", "{tmp}/t", "-b", "0"],
])
def test_batch_size_below_one_is_refused(ckpts, tmp_path, capsys, argv):
    img = _image(tmp_path / "a.png")
    assert main([a.format(clf=ckpts["clf"], img=img, tmp=tmp_path) for a in argv]) == 2
    assert "batch-size" in one_error(capsys)


@pytest.mark.parametrize("argv", [
    ["validate", "--checkpoint", "{clf}", "--data", "{data}", "--results-file", "{out}/r.json"],
    ["export", "--checkpoint", "{clf}", "-o", "{out}/m.onnx"],
    ["segment", "validate", "--checkpoint", "{seg}", "--data", "{data}", "-o", "{out}/val"],
    ["segment", "predict", "--checkpoint", "{seg}", "{img}", "-o", "{out}/masks"],
    ["transfer", "--model", "sequencer2d_tiny", "--data", "{data}", "-o", "{out}/t", "--epochs", "1"],
])
@pytest.mark.parametrize("where", ["unwritable", "under-a-file"])
def test_output_paths_are_checked_before_the_work(ckpts, tmp_path, capsys, unwritable, argv, where):
    img = _image(tmp_path / "a.png")
    (tmp_path / "afile").write_text("x")
    out = unwritable if where == "unwritable" else tmp_path / "afile"
    # --data does not exist: the output is refused first, before any model or data is read
    argv = [a.format(clf=ckpts["clf"], seg=ckpts["seg"], img=img, out=out, data=tmp_path / "nope") for a in argv]
    assert main(argv) == 2
    err = one_error(capsys)
    assert "cannot write" in err and str(out) in err, err
    assert ("permission denied" in err) if where == "unwritable" else ("is a file, not a folder" in err), err


def test_results_file_that_is_a_folder_is_named(ckpts, tmp_path, capsys):
    (tmp_path / "r.json").mkdir()
    assert main(["validate", "--checkpoint", str(ckpts["clf"]), "--data", str(tmp_path / "nope"),
                 "--results-file", str(tmp_path / "r.json")]) == 2
    assert f"cannot write {tmp_path / 'r.json'}: it is a folder" in one_error(capsys, "validate")


# ------------------------------------------------------------------------------- 7. transfer's splits
def _transfer(tasks: list[Path], out: Path) -> list[str]:
    return ["transfer", "--model", "sequencer2d_tiny", "--data", *map(str, tasks), "-o", str(out), "--epochs", "1",
            "--train-size", "4", "--val-size", "2", "--lrs", "1e-3", "--workers", "0", "--device", "cpu"]


@pytest.mark.parametrize("fault, needle", [
    ("test-class", "task shapes: the test split ({root}/test) has classes the train split lacks: hat"),
    ("val-class", "task shapes: the val split ({root}/val) has classes the train split lacks: hat"),
    ("no-test", "task shapes ({root}): no test split"),
    ("no-train", "task shapes ({root}): no train split"),
    ("empty-test", "task shapes: the test split ({root}/test) has no images"),
    ("idx-label", "task digits: the test split (t10k idx files in {root}) has label 12"),
    ("idx-no-test", "task digits ({root}): no test split"),
])
def test_transfer_checks_every_split_before_the_first_fit(tmp_path, capsys, fault, needle):
    good = write_image_folder(tmp_path / "good", n_per_class=4, val_name="test")
    if fault.startswith("idx"):
        root = write_idx_folder(tmp_path / "digits", n_train=12, n_val=6)
        labels = root / "t10k-labels-idx1-ubyte"
        if fault == "idx-label":
            data = bytearray(labels.read_bytes())
            data[-1] = 12
            labels.write_bytes(bytes(data))
        else:
            labels.unlink()
    else:
        root = write_image_folder(tmp_path / "shapes", n_per_class=4, val_name="test")
        if fault == "test-class":
            _image(root / "test" / "hat" / "0.png")
        elif fault == "val-class":
            _image(root / "val" / "hat" / "0.png")
            _image(root / "val" / "bag" / "0.png")
        elif fault == "no-test":
            for f in (root / "test").rglob("*.png"):
                f.unlink()
            for d in sorted((root / "test").rglob("*"), reverse=True):
                d.rmdir()
            (root / "test").rmdir()
        elif fault == "no-train":
            (root / "train").rename(root / "training")
        elif fault == "empty-test":
            for f in (root / "test").rglob("*.png"):
                f.unlink()
    out = tmp_path / "out"
    assert main(_transfer([good, root], out)) == 2  # the faulty task second: nothing of the first task runs
    assert needle.format(root=root) in one_error(capsys, "transfer")
    assert not out.exists()


def test_transfer_output_that_is_a_file_is_refused_first(tmp_path, capsys):
    good = write_image_folder(tmp_path / "good", n_per_class=4, val_name="test")
    (tmp_path / "out").write_text("x")
    assert main(_transfer([good], tmp_path / "out")) == 2
    assert f"cannot write to {tmp_path / 'out'}: it is a file" in one_error(capsys, "transfer")
