"""Fashion-MNIST scenes: a segmentation dataset made deterministically from real images, written in
the Pascal VOC layout so that the VOC reader (ngl_keras.segmentation_data.voc) reads it.

    python benchmarks/fmnist_scenes.py --out /tmp/fmnist_scenes --train 2000 --val 500

Scene i of a split draws everything from `np.random.default_rng([seed, split number, i])`: 2–4
Fashion-MNIST items (train scenes from the training images, val scenes from the test images), each
pasted at a random position of a 64×64 black canvas, later items over earlier ones. An item's
pixels above THRESHOLD are pasted and get the class item label + 1; background is class 0; a
one-pixel band around each item's pixels is void (255) where no item is visible, since the faint
pixels at an item's edge belong to neither class for sure. 11 classes.
Written as `<out>/VOC2012/JPEGImages/<id>.jpg` (grayscale JPEG, quality 95),
`SegmentationClass/<id>.png` (palette PNG: the index is the class id) and
`ImageSets/Segmentation/{train,val}.txt`; pass `<out>` to `segmentation_data.voc(out, split, classes=11)`.
The last line printed is JSON: the scene counts and the share of pixels per class and void.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ngl_keras import data
from ngl_keras.segmentation_data import VOID, voc_palette

CANVAS = 64
ITEMS = (2, 4)            # fewest and most items per scene
THRESHOLD = 64            # assumption: an item pixel brighter than this is the item, not background
BACKGROUND = 0
CLASSES = 11              # background + the 10 Fashion-MNIST classes
SPLITS = {"train": ("train", 0), "val": ("test", 1)}   # scene split -> (Fashion-MNIST split, split number)


def _grown(mask):
    """`mask` grown by one pixel in the 8-neighbourhood."""
    padded = np.pad(mask, 1)
    grown = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            grown |= padded[dy: dy + mask.shape[0], dx: dx + mask.shape[1]]
    return grown


def scene(images, labels, rng):
    """One scene (uint8 image (64, 64), uint8 label map (64, 64)) from items of `images` (N, 28, 28)
    with classes `labels` (N,), all choices from `rng`."""
    image = np.zeros((CANVAS, CANVAS), np.uint8)
    label = np.full((CANVAS, CANVAS), BACKGROUND, np.uint8)
    for index in rng.choice(len(images), size=rng.integers(ITEMS[0], ITEMS[1] + 1), replace=False):
        item = images[index]
        top, left = rng.integers(0, CANVAS - item.shape[0] + 1, size=2)
        mask = np.zeros((CANVAS, CANVAS), bool)
        mask[top: top + item.shape[0], left: left + item.shape[1]] = item > THRESHOLD
        canvas_item = np.zeros((CANVAS, CANVAS), np.uint8)
        canvas_item[top: top + item.shape[0], left: left + item.shape[1]] = item
        image[mask] = canvas_item[mask]
        label[mask] = labels[index] + 1
        label[_grown(mask) & ~mask & (label == BACKGROUND)] = VOID
    return image, label


def write_scenes(out, counts, seed=0, fashion_mnist=None):
    """Write `counts` ({"train": n, "val": m}) scenes under `out` in the VOC layout; returns the
    pixel counts per class id (255 included). `fashion_mnist` as `data.fashion_mnist_idx()` gives it."""
    fashion_mnist = fashion_mnist or data.fashion_mnist_idx()
    if fashion_mnist is None:
        raise ValueError(f"the Fashion-MNIST IDX files are not in {data.FASHION_MNIST_DIR} "
                         "(Debian package dataset-fashion-mnist, or set NGL_FASHION_MNIST_DIR).")
    base = Path(out) / "VOC2012"
    for directory in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / directory).mkdir(parents=True, exist_ok=True)
    palette, pixels = voc_palette(), np.zeros(256, np.int64)
    for split, count in counts.items():
        source, number = SPLITS[split]
        images, labels = fashion_mnist[source]
        images = images[..., 0]
        names = [f"{split}_{i:06d}" for i in range(count)]
        for i, name in enumerate(names):
            image, label = scene(images, labels, np.random.default_rng([seed, number, i]))
            Image.fromarray(image, mode="L").save(base / "JPEGImages" / f"{name}.jpg", quality=95)
            png = Image.fromarray(label, mode="P")
            png.putpalette(palette)
            png.save(base / "SegmentationClass" / f"{name}.png")
            pixels += np.bincount(label.ravel(), minlength=256)
        (base / "ImageSets/Segmentation" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return pixels


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the directory to write (it plays VOCdevkit)")
    parser.add_argument("--train", type=int, default=2000, help="training scenes (default 2000)")
    parser.add_argument("--val", type=int, default=500, help="validation scenes (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in ("train", "val"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1; got {getattr(args, name)}.")
    pixels = write_scenes(args.out, {"train": args.train, "val": args.val}, args.seed)
    shares = {str(c): round(float(pixels[c] / pixels.sum()), 4) for c in [*range(CLASSES), VOID]}
    print(json.dumps({"out": args.out, "train": args.train, "val": args.val, "classes": CLASSES,
                      "pixel_share": shares}))


if __name__ == "__main__":
    main()
