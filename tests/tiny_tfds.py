"""A tiny tfds dataset prepared on disk, offline: a dataset tfds knows only from its files (as a
user's own, or a catalogue dataset prepared elsewhere). Building needs TensorFlow (tfds encodes
the images with it), so the tests build it in a subprocess; reading it does not (JAX run).

    python tests/tiny_tfds.py DATA_DIR FILE_FORMAT   # tfrecord (tf.data) or array_record (JAX)
"""

import os
import subprocess
import sys
from pathlib import Path

SIDE, CLASSES = 16, 3
SIZES = {"train": 60, "test": 24}
IMAGENET_CLASSES = 5
IMAGENET_SIZES = {"train": 40, "validation": 20}


def build(data_dir, file_format):
    """Prepare `tiny_shapes` (16x16 gray, 3 classes: the class is which third of the image is bright)
    and `tiny_regression` (an image and a float target: not classification) in `data_dir`."""
    import numpy as np
    import tensorflow_datasets as tfds

    def examples(count, seed, label):
        rng = np.random.default_rng(seed)
        for i in range(count):
            image = rng.integers(0, 60, (SIDE, SIDE, 1), dtype=np.uint8)
            band = i % CLASSES
            image[:, band * SIDE // CLASSES:(band + 1) * SIDE // CLASSES] += 180
            yield i, {"image": image, label[0]: label[1](band)}

    class TinyShapes(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(SIDE, SIDE, 1)),
                "label": tfds.features.ClassLabel(num_classes=CLASSES)}), supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(count, k) for k, (split, count) in enumerate(SIZES.items())}

        def _generate_examples(self, count, seed):
            yield from examples(count, seed, ("label", int))

    class TinyRegression(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(SIDE, SIDE, 1)), "value": np.float32}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(8, 0)}

        def _generate_examples(self, count, seed):
            yield from examples(count, seed, ("value", float))

    class TinyImagenetSpec(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """imagenet2012's feature spec (variable-size RGB JPEG image, label, file_name), 5 classes."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(num_classes=IMAGENET_CLASSES),
                "file_name": tfds.features.Text()}), supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(count, k) for k, (split, count) in enumerate(IMAGENET_SIZES.items())}

        def _generate_examples(self, count, seed):
            rng = np.random.default_rng(seed)
            for i in range(count):
                label = i % IMAGENET_CLASSES
                height, width = rng.integers(36, 60, 2)
                image = rng.integers(0, 50, (height, width, 3), dtype=np.uint8)
                image[..., label % 3] += 40 * (1 + label // 3)  # the class is the colour and brightness
                yield i, {"image": image, "label": label, "file_name": f"{i}.JPEG"}

    for builder in (TinyShapes, TinyRegression, TinyImagenetSpec):
        builder(data_dir=str(data_dir), file_format=file_format).download_and_prepare()


def build_in_subprocess(data_dir, file_format):
    subprocess.run([sys.executable, __file__, str(data_dir), file_format], check=True, capture_output=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return Path(data_dir)


if __name__ == "__main__":
    build(sys.argv[1], sys.argv[2])
