"""Short demo: build a Sequencer2D, save and reload it, and run it on Fashion-MNIST test images."""
import gzip
import tempfile
from pathlib import Path

import numpy as np
import torch

import lstmvision

DATA = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    data = gzip.open(path, "rb").read()
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(data[3])]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def main() -> None:
    model = lstmvision.create_model("sequencer2d_s", num_classes=10, in_chans=1).eval()
    with tempfile.TemporaryDirectory() as folder:
        lstmvision.save_pretrained(model, folder)
        restored = lstmvision.create_model(pretrained=folder).eval()
    if (DATA / "t10k-images-idx3-ubyte.gz").exists():
        images = torch.from_numpy(read_idx(DATA / "t10k-images-idx3-ubyte.gz")[:8].copy()).float() / 255
    else:
        images = torch.rand(8, 28, 28)
    x = torch.nn.functional.interpolate(images[:, None], size=224, mode="bilinear")
    with torch.no_grad():
        a, b = model(x), restored(x)
    print(f"sequencer2d_s: {sum(p.numel() for p in model.parameters()):,} params; logits {tuple(a.shape)}; "
          f"save/load max |diff| = {(a - b).abs().max().item():.1e}")


if __name__ == "__main__":
    main()
