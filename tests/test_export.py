"""ONNX / TorchScript export of every registered model, verified against PyTorch (onnxruntime on CPU)."""
import warnings

import onnx
import onnxruntime as ort
import pytest
import torch

import lstmvision
from deploy_helpers import SIZE, family, tiny_model
from lstmvision.cli import main
from lstmvision.commands import export as ex


@pytest.mark.slow
@pytest.mark.parametrize("name", lstmvision.list_models())
def test_onnx_export_every_model_dynamic_batch_and_size(name, tmp_path):
    model = tiny_model(name)
    result = ex.export(model, tmp_path / "m.onnx", img_size=SIZE, dynamic_batch=True, dynamic_size=True)
    shapes = [(c.batch, c.height, c.width) for c in result.checks]
    assert shapes[0] == (1, SIZE, SIZE) and shapes[1][0] == 3 and shapes[2][1:] != (SIZE, SIZE)
    assert result.ok, [str(c) for c in result.checks]
    assert result.max_abs_diff <= 1e-4
    ops = {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    if family(name) == "vil":
        return
    rnn_op = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[name.split("_")[0] if name.split("_")[0] in ("gru", "rnn") else "lstm"]
    assert rnn_op in ops  # one fused recurrent op per direction pair, not an unrolled loop


@pytest.mark.slow
def test_onnx_is_one_file_with_metadata(tmp_path):
    model = tiny_model("sequencer2d_s")
    model.class_names = list("abcde")
    ex.export(model, tmp_path / "m.onnx", img_size=SIZE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no external data file
    proto = onnx.load(str(tmp_path / "m.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["architecture"] == "sequencer2d_s" and '"a"' in meta["class_names"] and "mean" in meta["pretrained_cfg"]


@pytest.mark.slow
def test_onnx_static_export_keeps_fixed_shape(tmp_path):
    result = ex.export(tiny_model("sequencer2d_s"), tmp_path / "m.onnx", img_size=SIZE, batch_size=2)
    assert [(c.batch, c.height, c.width) for c in result.checks] == [(2, SIZE, SIZE)] and result.ok
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    dims = session.get_inputs()[0].shape
    assert dims == [2, 3, SIZE, SIZE]


@pytest.mark.slow
def test_fixed_size_model_exports_at_its_own_size_and_runs_at_others(tmp_path):
    # v_sequencer_s_pe resamples its position embedding; at the native grid size eager skips the resampling,
    # so the trace must not bake that shortcut in
    model = tiny_model("v_sequencer_s_pe", img_size=SIZE)
    assert tuple(model.pos_embed.shape[1:3]) == (SIZE // 14, SIZE // 14)
    for suffix in ("onnx", "pt"):
        result = ex.export(model, tmp_path / f"m.{suffix}", img_size=SIZE, dynamic_size=True)
        assert result.ok and len(result.checks) == 2, [str(c) for c in result.checks]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sequencer2d_s", "gru_sequencer2d_s", "v_sequencer_s", "sequencer2d_s_horizontal"])
def test_torchscript_export(name, tmp_path):
    result = ex.export(tiny_model(name), tmp_path / "m.pt", img_size=SIZE, dynamic_batch=True, dynamic_size=True)
    assert result.format == "torchscript" and result.ok and len(result.checks) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extra = {"config.json": ""}
        torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)
    assert b"input_size" in extra["config.json"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    lstmvision.save_pretrained(tiny_model("sequencer2d_s"), folder, class_names=list("abcde"))
    return folder


@pytest.mark.slow
def test_cli_export_from_saved_folder(saved, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    rc = main(["export", "--checkpoint", str(saved), "--format", "onnx", "--output", str(out),
               "--img-size", str(SIZE), "--dynamic-batch", "--dynamic-size", "--opset", "17"])
    text = capsys.readouterr().out
    assert rc == 0 and out.is_file()
    assert text.count("verified with onnxruntime") == 3 and "max |Δ|" in text and text.strip().splitlines()[-1].startswith("ok")
    rc = main(["export", "--checkpoint", str(saved), "--output", str(tmp_path / "m.pt"), "--img-size", str(SIZE)])
    assert rc == 0 and "torch.jit.load" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_fails_when_verification_exceeds_tolerance(saved, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ex, "verify", lambda *a, **k: [ex.Check(1, SIZE, SIZE, 3e-3)])
    rc = main(["export", "--checkpoint", str(saved), "--output", str(tmp_path / "m.onnx"), "--img-size", str(SIZE)])
    assert rc == 1 and "exceeds the tolerance" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "torchscript", "--opset", "17"], "--opset applies to ONNX only"),
        (["--opset", "7"], "--opset 7 is not supported"),
        (["--output-suffix", ".bin"], "cannot tell the format"),
        (["--weights-file"], "say which architecture"),
        (["--no-source"], "give --model NAME"),
        (["--model", "no_such_model"], "unknown model"),
        (["--missing"], "checkpoint not found"),
    ],
)
def test_cli_unsupported_combinations_give_one_clear_error(saved, tmp_path, capsys, args, message):
    out, argv = tmp_path / "m.onnx", []
    source = ["--checkpoint", str(saved)]
    for a in list(args):
        if a == "--output-suffix":
            out = tmp_path / "m.bin"
        elif a == ".bin":
            continue
        elif a == "--weights-file":
            source = ["--checkpoint", str(saved / "model.safetensors")]
        elif a == "--no-source":
            source = []
        elif a == "--missing":
            source = ["--checkpoint", str(tmp_path / "nope")]
        elif a == "--model":
            source = []
            argv.append(a)
        else:
            argv.append(a)
    rc = main(["export", *source, *argv, "--output", str(out), "--img-size", str(SIZE)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1, err


@pytest.mark.slow
def test_vil_exports_to_onnx_at_its_native_grid_and_refuses_torchscript(tmp_path):
    model = tiny_model("vil2_tiny", img_size=SIZE)  # position embedding built for this size: no resampling in eager
    result = ex.export(model, tmp_path / "m.onnx", img_size=SIZE, dynamic_size=True)
    assert result.ok and len(result.checks) == 2, [str(c) for c in result.checks]
    with pytest.raises(ex.ExportError, match="not supported for Vision-LSTM"):
        ex.export(model, tmp_path / "m.pt")
