"""Segmentation data: the on-disk layouts researchers have (Pascal VOC 2012, COCO-Stuff164k), the
reference's training augmentation, and the batches both input paths are built from.

Layouts (SPEC §8; tfds has neither dataset):
- `voc(root, split)`: `root` is `VOCdevkit`; `VOC2012/JPEGImages/<id>.jpg`,
  `VOC2012/SegmentationClass/<id>.png` (palette PNGs: the palette index is the class id, 255 void),
  `VOC2012/ImageSets/Segmentation/{train,val}.txt`. Split "train_aug" reads SBD's augmented labels,
  `VOC2012/SegmentationClassAug` with `VOC2012/ImageSets/SegmentationAug/train_aug.txt`;
  `voc_training_split` picks it when present, as the reference trains on it.
- `coco_stuff(root, split)`: `root` holds `images/{train2017,val2017}/*.jpg` and
  `annotations/{train2017,val2017}/*.png` (labels 0–181, 255 unlabeled).

An image is read as RGB uint8, a label PNG as its stored values (a palette PNG as its indices, never
converted to colours). Training augmentation (`augment`) is that of kazuto1011/deeplab-pytorch
(libs/datasets/base.py): a random scale from `scales`, padding at the bottom and right to the crop
size (image with the mean, label with 255), a random crop, a horizontal flip with probability ½.
It is one pure function of numpy arrays and an explicit `np.random.Generator`, shared by both input
paths: `SegmentationBatches` (a `keras.utils.PyDataset`, any backend) and its tf.data form
(`SegmentationBatches.tf_dataset`, which `data.placement` has Keras read on TensorFlow).
Evaluation reads full images, unaugmented.

Differs from the reference, on purpose: images are RGB (the reference's cv2 reads BGR; the mean is
the same per channel); the bilinear resize is written in numpy with cv2's INTER_LINEAR pixel-centre
convention (no anti-aliasing when shrinking, as cv2), the label's nearest-neighbour resize with PIL's.
"""

import dataclasses
from pathlib import Path

import keras
import numpy as np
from PIL import Image

VOID = 255
VOC_CLASSES = 21
COCO_STUFF_CLASSES = 182
VOC_SPLITS = ("train", "val", "train_aug")
COCO_STUFF_SPLITS = ("train2017", "val2017")
# The reference's per-channel image mean (configs/voc12.yaml, cocostuff164k.yaml), in RGB order.
REFERENCE_MEAN = (122.675, 116.669, 104.008)
REFERENCE_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)


@dataclasses.dataclass(frozen=True)
class SegmentationSplit:
    """One split of a dataset on disk: its name, class count, and (image path, label path) pairs."""
    name: str
    classes: int
    examples: tuple

    def __len__(self):
        return len(self.examples)

    def read(self, index):
        image_path, label_path = self.examples[index]
        return read_example(image_path, label_path, self.classes)


def _existing(path, what):
    if not path.exists():
        raise ValueError(f"{what} {path} does not exist.")
    return path


def voc_training_split(root):
    """"train_aug" when SBD's augmented labels and their list are present under `root`, else "train"."""
    base = Path(root) / "VOC2012"
    aug = (base / "SegmentationClassAug").is_dir() and (base / "ImageSets/SegmentationAug/train_aug.txt").is_file()
    return "train_aug" if aug else "train"


def voc(root, split, classes=VOC_CLASSES):
    """The Pascal VOC 2012 split `split` (one of VOC_SPLITS) under `root` (the VOCdevkit directory);
    `classes` for another dataset written in this layout (benchmarks/fmnist_scenes.py)."""
    if split not in VOC_SPLITS:
        raise ValueError(f"VOC split {split!r} is not one of {', '.join(VOC_SPLITS)}.")
    base = _existing(Path(root) / "VOC2012", "the VOC directory")
    images = _existing(base / "JPEGImages", "the image directory")
    if split == "train_aug":
        labels = _existing(base / "SegmentationClassAug", "the augmented label directory")
        listing = _existing(base / "ImageSets/SegmentationAug/train_aug.txt", "the list")
    else:
        labels = _existing(base / "SegmentationClass", "the label directory")
        listing = _existing(base / "ImageSets/Segmentation" / f"{split}.txt", "the list")
    examples = []
    for number, line in enumerate(listing.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) == 2:   # SBD's list form: "/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png"
            pair = (base / fields[0].lstrip("/"), base / fields[1].lstrip("/"))
        elif len(fields) == 1:
            pair = (images / f"{fields[0]}.jpg", labels / f"{fields[0]}.png")
        else:
            raise ValueError(f"{listing} line {number}: expected an image id or an image and a label path; "
                             f"got {line!r}.")
        for path in pair:
            if not path.is_file():
                raise ValueError(f"{listing} line {number} names {path}, which does not exist.")
        examples.append(pair)
    if not examples:
        raise ValueError(f"{listing} lists no examples.")
    return SegmentationSplit(f"voc_{split}", classes, tuple(examples))


@dataclasses.dataclass(frozen=True)
class SegmentationDataset:
    """A segmentation dataset a grid can name: its class count, the on-disk layout it is read from
    ("voc" or "coco_stuff") and that layout's splits. `root` (the grid's data_dir) is the directory
    the layout starts at: VOCdevkit for "voc", the COCO-Stuff directory for "coco_stuff"."""
    name: str
    classes: int
    layout: str
    splits: tuple

    def split(self, root, name, limit=None):
        """Split `name` read from `root` (its first `limit` examples), checked (one line when not)."""
        if root is None:
            raise ValueError(f"dataset {self.name!r} is read from disk: give its root directory with --data-dir "
                             f"or data_dir: in the grid config ({LAYOUT_ROOTS[self.layout]}).")
        if name not in self.splits:
            raise ValueError(f"dataset {self.name!r} has no split {name!r}; it has {', '.join(self.splits)}.")
        split = voc(root, name, self.classes) if self.layout == "voc" else coco_stuff(root, name)
        if limit is not None:
            if limit > len(split):
                raise ValueError(f"limit_train {limit} exceeds the {len(split)} images of {self.name}'s split "
                                 f"{name!r}.")
            split = dataclasses.replace(split, examples=split.examples[:limit])
        return split


LAYOUT_ROOTS = {"voc": "the VOCdevkit directory, holding VOC2012/", "coco_stuff": "the directory holding "
                "images/ and annotations/"}
# The segmentation datasets a grid can name (task: segmentation); classification's are ngl_keras.data's.
DATASETS = {d.name: d for d in (
    SegmentationDataset("voc2012", VOC_CLASSES, "voc", VOC_SPLITS),
    SegmentationDataset("cocostuff164k", COCO_STUFF_CLASSES, "coco_stuff", COCO_STUFF_SPLITS),
    # benchmarks/fmnist_scenes.py: Fashion-MNIST items on a 64×64 canvas, background + 10 classes, VOC layout
    SegmentationDataset("fmnist_scenes", 11, "voc", ("train", "val")),
)}


def dataset(name):
    """The `SegmentationDataset` of `name`, or a one-line ValueError naming the known ones."""
    if name not in DATASETS:
        raise ValueError(f"unknown segmentation dataset {name!r}; known: {', '.join(sorted(DATASETS))}.")
    return DATASETS[name]


def coco_stuff(root, split):
    """The COCO-Stuff164k split `split` (train2017 or val2017) under `root`: every image of
    images/<split>, sorted, with its label annotations/<split>/<id>.png (as the reference lists it)."""
    if split not in COCO_STUFF_SPLITS:
        raise ValueError(f"COCO-Stuff split {split!r} is not one of {', '.join(COCO_STUFF_SPLITS)}.")
    images = _existing(Path(root) / "images" / split, "the image directory")
    labels = _existing(Path(root) / "annotations" / split, "the label directory")
    examples = []
    for image in sorted(images.glob("*.jpg")):
        label = labels / f"{image.stem}.png"
        if not label.is_file():
            raise ValueError(f"the label {label} of image {image} does not exist.")
        examples.append((image, label))
    if not examples:
        raise ValueError(f"the image directory {images} holds no .jpg image.")
    return SegmentationSplit(f"coco_stuff_{split}", COCO_STUFF_CLASSES, tuple(examples))


def read_example(image_path, label_path, classes):
    """(RGB uint8 image (H, W, 3), uint8 label map (H, W)); one-line ValueErrors for a label PNG
    in colour, sizes that differ, or label values outside [0, classes) ∪ {255}."""
    with Image.open(image_path) as file:
        image = np.asarray(file.convert("RGB"))
    with Image.open(label_path) as file:
        if file.mode not in ("P", "L"):
            raise ValueError(f"{label_path}: a label PNG must hold class ids (palette or grayscale); "
                             f"its mode is {file.mode}.")
        label = np.asarray(file)   # a palette PNG gives its indices: the class ids
    if image.shape[:2] != label.shape:
        raise ValueError(f"{image_path} is {image.shape[1]}x{image.shape[0]} but its label {label_path} is "
                         f"{label.shape[1]}x{label.shape[0]}.")
    bad = (label != VOID) & (label >= classes)
    if bad.any():
        raise ValueError(f"{label_path}: label value {int(label[bad][0])} is outside [0, {classes}) and not "
                         f"the void label {VOID}.")
    return image, label


def voc_palette():
    """The VOC colour map, as the devkit's label PNGs carry it: the bits of the class id interleaved
    over R, G, B from the most significant bit down (class 1 dark red, 255 void cream)."""
    palette = np.zeros((256, 3), np.uint8)
    for c in range(256):
        value = c
        for bit in range(8):
            for channel in range(3):
                palette[c, channel] |= ((value >> channel) & 1) << (7 - bit)
            value >>= 3
    return palette.ravel().tolist()


# Augmentation.

def resize_bilinear(image, height, width):
    """cv2.resize(..., INTER_LINEAR) in numpy: pixel centres aligned, edges clamped; float32 out."""
    def axis(new, old):
        source = np.clip((np.arange(new) + 0.5) * (old / new) - 0.5, 0, old - 1)
        low = np.floor(source).astype(int)
        return low, np.minimum(low + 1, old - 1), (source - low).astype(np.float32)

    image = np.asarray(image, np.float32)
    top, bottom, dy = axis(height, image.shape[0])
    left, right, dx = axis(width, image.shape[1])
    rows = image[top] * (1 - dy)[:, None, None] + image[bottom] * dy[:, None, None]
    return rows[:, left] * (1 - dx)[None, :, None] + rows[:, right] * dx[None, :, None]


def resize_nearest(label, height, width):
    """PIL's Image.NEAREST resize of a label map: source index floor((i + ½) · old / new)."""
    rows = np.minimum(((np.arange(height) + 0.5) * label.shape[0] / height).astype(int), label.shape[0] - 1)
    columns = np.minimum(((np.arange(width) + 0.5) * label.shape[1] / width).astype(int), label.shape[1] - 1)
    return label[rows][:, columns]


def random_crop(image, label, crop_size, rng):
    """The same random crop_size × crop_size window of image and label."""
    height, width = label.shape
    if crop_size > height or crop_size > width:
        raise ValueError(f"the crop {crop_size}x{crop_size} is larger than the padded image {width}x{height}.")
    top, left = rng.integers(0, height - crop_size + 1), rng.integers(0, width - crop_size + 1)
    window = (slice(top, top + crop_size), slice(left, left + crop_size))
    return image[window], label[window]


def augment(image, label, rng, *, crop_size, scales=REFERENCE_SCALES, mean=REFERENCE_MEAN, flip=True):
    """The reference's training augmentation (module docstring) of one example: (float32 image
    (crop, crop, 3), uint8 label (crop, crop)). Pure: all randomness comes from `rng`."""
    scale = scales[rng.integers(len(scales))]
    height, width = int(label.shape[0] * scale), int(label.shape[1] * scale)
    image, label = resize_bilinear(image, height, width), resize_nearest(label, height, width)
    pad_height, pad_width = max(crop_size - height, 0), max(crop_size - width, 0)
    if pad_height or pad_width:
        padded = np.empty((height + pad_height, width + pad_width, image.shape[2]), np.float32)
        padded[...] = np.asarray(mean, np.float32)
        padded[:height, :width] = image
        image = padded
        label = np.pad(label, ((0, pad_height), (0, pad_width)), constant_values=VOID)
    image, label = random_crop(image, label, crop_size, rng)
    if flip and rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """The settings of `augment`, checked where they enter."""
    crop_size: int = 321
    scales: tuple = REFERENCE_SCALES
    mean: tuple = REFERENCE_MEAN
    flip: bool = True

    def __post_init__(self):
        if not isinstance(self.crop_size, int) or self.crop_size < 1:
            raise ValueError(f"crop_size must be a positive integer; got {self.crop_size!r}.")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"scales must be positive numbers; got {self.scales!r}.")
        if len(self.mean) != 3:
            raise ValueError(f"mean must give 3 channel values (R, G, B); got {self.mean!r}.")

    def __call__(self, image, label, rng):
        return augment(image, label, rng, crop_size=self.crop_size, scales=tuple(self.scales),
                       mean=self.mean, flip=self.flip)


# The examples of an epoch, for both input paths.

@dataclasses.dataclass(frozen=True)
class SegmentationExamples:
    """Example `index` of epoch `epoch`, read and (when training) augmented with the generator
    `np.random.default_rng([seed, epoch, index])`, and the order of an epoch: the same pixels on
    every backend and input path, whatever order the workers run in, and after a resume."""
    split: SegmentationSplit
    augmentation: Augmentation = None   # None: evaluation on full images
    seed: int = 0
    shuffle: bool = False
    pad_multiple: int = 1               # full images padded (bottom, right) to a multiple of this
    mean: tuple = REFERENCE_MEAN        # ... with this image value, and the label with VOID

    def order(self, epoch, length=None):
        """The example indices of epoch `epoch`: a permutation (shuffled) or 0, 1, ...; `length`
        longer than the split (a schedule counted in iterations) continues with further ones."""
        count = len(self.split)
        if not self.shuffle:
            return np.resize(np.arange(count), length or count)
        orders = [np.random.default_rng([self.seed, epoch]).permutation(count)]
        while length is not None and len(orders) * count < length:
            orders.append(np.random.default_rng([self.seed, epoch, len(orders)]).permutation(count))
        return np.concatenate(orders)[:length or count]

    def example(self, epoch, index):
        image, label = self.split.read(index)
        if self.augmentation is not None:
            image, label = self.augmentation(image, label, np.random.default_rng([self.seed, epoch, index]))
        elif self.pad_multiple > 1:
            image, label = pad_to_multiple(image, label, self.pad_multiple, self.mean)
        return image.astype(np.float32), label.astype(np.int32)


def pad_to_multiple(image, label, multiple, mean=REFERENCE_MEAN):
    """Image and label padded at the bottom and right to sides that are multiples of `multiple`
    (a U-Net's input), the image with `mean` and the label with VOID: the padding is never scored."""
    height, width = label.shape
    pad_height, pad_width = -height % multiple, -width % multiple
    if not pad_height and not pad_width:
        return image, label
    padded = np.empty((height + pad_height, width + pad_width, image.shape[2]), np.float32)
    padded[...] = np.asarray(mean, np.float32)
    padded[:height, :width] = image
    return padded, np.pad(label, ((0, pad_height), (0, pad_width)), constant_values=VOID)


def _stacked(pairs, split):
    sizes = {image.shape for image, _ in pairs}
    if len(sizes) > 1:
        raise ValueError(f"{split.name}: images of different sizes {sorted(sizes)} cannot share a batch; "
                         "evaluate full images with batch_size 1 or augment with a crop.")
    return np.stack([image for image, _ in pairs]), np.stack([label for _, label in pairs])


class SegmentationBatches(keras.utils.PyDataset):
    """Batches of (float32 images (B, H, W, 3), int32 label maps (B, H, W) with 255 void) for
    `model.fit` / `evaluate` on any Keras backend; epoch e is that of `SegmentationExamples`."""

    def __init__(self, examples, *, batch_size, epoch=0, steps=None, **kwargs):
        super().__init__(**kwargs)
        self.examples, self.batch_size, self.epoch, self.steps = examples, batch_size, epoch, steps

    def __len__(self):
        return self.steps or -(-len(self.examples.split) // self.batch_size)

    def set_epoch(self, epoch):
        """The epoch the next batches belong to (a resumed run continues its order and augmentation)."""
        self.epoch = epoch

    def __getitem__(self, index):
        length = self.steps * self.batch_size if self.steps else None
        indices = self.examples.order(self.epoch, length)[index * self.batch_size: (index + 1) * self.batch_size]
        return _stacked([self.examples.example(self.epoch, int(i)) for i in indices], self.examples.split)

    def on_epoch_end(self):
        self.epoch += 1

    def tf_dataset(self):
        """These batches as a tf.data pipeline (`tf_dataset`) that follows this object's epoch: a pass
        over it is the epoch `set_epoch` last gave when the pass begins (fit's, through
        `resume.InputEpoch`), so that a resumed run continues its order and augmentation here too."""
        import tensorflow as tf

        epoch = tf.data.Dataset.from_tensors(np.int64(0)).map(
            lambda _: tf.ensure_shape(tf.numpy_function(lambda: np.int64(self.epoch), [], tf.int64), []))
        return _tf_batches(self.examples, epoch, 1, self.batch_size, self.steps)


def tf_dataset(examples, *, batch_size, epochs=1, first_epoch=0, steps=None):
    """A tf.data.Dataset of the same batches as `SegmentationBatches`, epochs first_epoch, … in a row
    (batches never span two epochs; `steps` batches each when given)."""
    import tensorflow as tf

    return _tf_batches(examples, tf.data.Dataset.range(first_epoch, first_epoch + epochs), epochs, batch_size, steps)


def _tf_batches(examples, epochs, count, batch_size, steps):
    """The batches of each epoch of `epochs` (a dataset of `count` epoch numbers): each example read
    and augmented by the one reader (`SegmentationExamples.example`, in Python through
    tf.numpy_function) in parallel and in order, then batched; the whole prefetched. Its cardinality
    is stated, so that Keras counts an epoch's steps as for `SegmentationBatches`."""
    import tensorflow as tf

    length = steps * batch_size if steps else None
    side = [examples.augmentation.crop_size] * 2 if examples.augmentation is not None else [None, None]

    def one_epoch(epoch):
        order = tf.numpy_function(lambda e: examples.order(int(e), length).astype(np.int64), [epoch], tf.int64)
        pairs = tf.data.Dataset.from_tensor_slices(order).map(
            lambda i: tf.numpy_function(lambda e, k: examples.example(int(e), int(k)), [epoch, i],
                                        [tf.float32, tf.int32]),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        pairs = pairs.map(lambda image, label: (tf.ensure_shape(image, [*side, 3]), tf.ensure_shape(label, side)))
        return pairs.batch(batch_size)

    per_epoch = steps or -(-len(examples.split) // batch_size)
    batches = epochs.flat_map(one_epoch).apply(tf.data.experimental.assert_cardinality(count * per_epoch))
    return batches.prefetch(tf.data.AUTOTUNE)
