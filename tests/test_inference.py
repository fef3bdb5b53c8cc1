"""lstmvision.Classifier: the model's own preprocessing, every input kind, labels."""
import numpy as np
import pytest
import torch
from PIL import Image

import lstmvision
from deploy_helpers import tiny_model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("clf") / "tiny"
    model = tiny_model("sequencer2d_s")
    model.pretrained_cfg.update(input_size=(3, 64, 64), crop_pct=1.0, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    lstmvision.save_pretrained(model, path, class_names=["ant", "bee", "cat", "dog", "eel"])
    return path


def _image(seed=0, size=(90, 70), mode="RGB"):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr).convert(mode)


def test_from_pretrained_uses_the_models_preprocessing(folder):
    clf = lstmvision.Classifier.from_pretrained(folder, device="cpu")
    assert clf.data_config["input_size"] == (3, 64, 64) and clf.data_config["mean"] == (0.5, 0.5, 0.5)
    img = _image()
    expected = img.resize((64, 64), Image.BICUBIC)  # crop_pct 1.0: resize the short side, centre crop
    batch, single = clf.preprocess(img)
    assert single and batch.shape == (1, 3, 64, 64)
    manual = clf.transform(img)
    torch.testing.assert_close(batch[0], manual)
    assert abs(float(batch.mean()) - (np.asarray(expected).mean() / 255 - 0.5) / 0.25) < 0.2


def test_every_input_kind_gives_the_same_prediction(folder, tmp_path):
    clf = lstmvision.Classifier.from_pretrained(folder, device="cpu")
    img = _image()
    img.save(tmp_path / "x.png")
    pred = clf(img, top_k=3)
    assert isinstance(pred, lstmvision.Prediction) and pred.label in clf.class_names and len(pred.top_k) == 3
    assert [s for _, _, s in pred.top_k] == sorted([s for _, _, s in pred.top_k], reverse=True)
    for other in (str(tmp_path / "x.png"), tmp_path / "x.png", np.asarray(img),
                  torch.from_numpy(np.array(img)).permute(2, 0, 1)):
        p = clf(other, top_k=3)
        assert p.index == pred.index and abs(p.score - pred.score) < 1e-6
    many = clf([img, str(tmp_path / "x.png")])
    assert len(many) == 2 and all(p.index == pred.index for p in many)
    batch, _ = clf.preprocess(img)
    assert clf(batch[0]).index == pred.index  # a preprocessed (C,H,W) tensor
    out = clf(batch.repeat(3, 1, 1, 1))  # a preprocessed batch
    assert len(out) == 3
    probs = clf.probabilities([img, img])
    assert probs.shape == (2, 5) and torch.allclose(probs.sum(-1), torch.ones(2))
    assert pred.as_dict()["top_k"][0]["label"] == pred.label


def test_grayscale_model_converts_images_to_one_channel(tmp_path):
    model = tiny_model("sequencer2d_s", in_chans=1)
    model.pretrained_cfg.update(input_size=(1, 64, 64), mean=(0.286,), std=(0.353,))
    clf = lstmvision.Classifier(model, device="cpu")
    batch, _ = clf.preprocess(_image())
    assert batch.shape == (1, 1, 64, 64)
    # a 3-channel cfg on a 1-channel model: channels and normalisation follow the model
    model2 = tiny_model("sequencer2d_s", in_chans=1)
    clf2 = lstmvision.Classifier(model2, device="cpu")
    assert clf2.data_config["input_size"][0] == 1 and len(clf2.data_config["mean"]) == 1
    assert clf2(_image()).label in clf2.class_names


def test_labels_imagenet_names_or_indices():
    model = tiny_model("sequencer2d_s", num_classes=1000)
    assert lstmvision.Classifier(model, device="cpu").class_names[0].startswith("tench")
    assert lstmvision.Classifier(tiny_model("vil2_tiny", num_classes=3), device="cpu").class_names == ["0", "1", "2"]


def test_clear_errors(folder, tmp_path):
    clf = lstmvision.Classifier.from_pretrained(folder, device="cpu")
    with pytest.raises(FileNotFoundError):
        clf(str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match="preprocessed tensor"):
        clf(torch.randn(1, 4, 64, 64))
    with pytest.raises(TypeError, match="cannot classify"):
        clf(42)
    with pytest.raises(ValueError, match="model_name"):
        lstmvision.Classifier.from_pretrained(folder / "model.safetensors")
    with pytest.raises(FileNotFoundError):
        lstmvision.Classifier.from_pretrained(tmp_path / "nothing")
    with pytest.raises(ValueError, match="top_k"):
        clf(_image(), top_k=0)
