"""Write the Fashion-MNIST detection scenes: a detection / instance-segmentation set in the COCO 2017 layout.

`OUTPUT/annotations/instances_{train2017,val2017}.json` with the images in `OUTPUT/train2017/` and
`OUTPUT/val2017/`: RGB canvases with noisy colour backgrounds and up to `--max-objects` tinted Fashion-MNIST
garments each (28 px scaled by 0.7-2.0, boxes overlapping by IoU <= 0.2), training scenes from the idx training
split and validation scenes from the test split (Debian's `dataset-fashion-mnist`, `$LSTMVISION_DATA` or
`--source`), categories 1-10 named after the Fashion-MNIST classes, each instance with its box and its visible
mask as RLE. Seeded: the same arguments write the same files. `OUTPUT/scenes.json` records the parameters.
The same as `lstmvision detect scenes` (`lstmvision.data.scenes.make_detection_scenes`).

    python scripts/make_detection_scenes.py --output data/fmnist-det [--train 1000 --val 100 --size 128 --seed 0]
"""
from __future__ import annotations

import argparse
import json

from lstmvision.data.scenes import make_detection_scenes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--output", "-o", required=True, help="folder to write (COCO layout)")
    p.add_argument("--source", help="Fashion-MNIST idx folder (default: $LSTMVISION_DATA or the Debian package)")
    p.add_argument("--train", type=int, default=1000, help="training scenes")
    p.add_argument("--val", type=int, default=100, help="validation scenes")
    p.add_argument("--size", type=int, default=128, help="scene side in pixels")
    p.add_argument("--max-objects", type=int, default=4, help="garments per scene, at most")
    p.add_argument("--min-scale", type=float, default=0.7, help="smallest garment scale (x 28 px)")
    p.add_argument("--max-scale", type=float, default=2.0, help="largest garment scale (x 28 px)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    info = make_detection_scenes(args.output, n_train=args.train, n_val=args.val, size=args.size, seed=args.seed,
                                 source=args.source, max_objects=args.max_objects, min_scale=args.min_scale,
                                 max_scale=args.max_scale)
    print(json.dumps(info["counts"]))


if __name__ == "__main__":
    main()
