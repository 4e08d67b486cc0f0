"""Images per second of the ImageNet training input on JAX, without TensorFlow: our path against Grain's.

    python benchmarks/imagenet_input.py                 # 224 px JPEGs, 2 workers: about 3 minutes on 2 shared CPU cores
    python benchmarks/imagenet_input.py --side 500      # larger JPEGs (500 x 437 px; ImageNet's are mostly 500 x 375)

A synthetic dataset with imagenet2012's feature spec (RGB JPEG images, 1,000 classes; smooth pictures, so
they compress as photographs do) is prepared as array_record in a temporary directory (in a subprocess:
tfds encodes the JPEGs with TensorFlow), then read as the ImageNet runs read it off TensorFlow:
`tfds.data_source`, decoded by tfds on access. Each loader gives the same training input: decode, the
recipe's random-resized crop to 224 px (`recipe_input.crop_on_host`), horizontal flip, float32 images and
one-hot targets (configs/imagenet_resnet.yaml's input: no RandAugment, erasing or mixing), batches of 32:

- ours: `data.ArrayBatches` (a `keras.utils.PyDataset`) with the recipe, as runs use it (1 worker, in the
  training process), and with Keras's 2 worker threads (its worker processes fork the JAX process: they
  hung here, so they are not measured);
- Grain: `grain.DataLoader` over the same data source, crop and flip in its 2 worker processes.

Each is consumed by `model.fit` of a trivial model (global average pooling, a 1,000-way dense layer;
compiled beforehand), and timed from the end of its 3rd batch to the end of its last: the rate a training
step gets once the workers run. Each loader runs twice, interleaved with the others; the better round is
the figure. The training step's need is the recorded ResNet101 figure: a GPU's when benchmarks/results/
has one, else this CPU's (benchmarks/results/imagenet-step/cpu.txt). The last line is JSON. Grain is
optional (`pip install grain`); without it its row is left out.
"""

import argparse
import datetime
from importlib import metadata
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATASET, CLASSES = "synthetic_imagenet", 1000
BATCH, SKIPPED = 32, 3  # the first batches wait for the workers to start: not timed
ROUNDS = 2
STEP_RECORD = ROOT / "benchmarks" / "results" / "imagenet-step" / "cpu.txt"


def build(data_dir, count, side):
    """Prepare `synthetic_imagenet` (imagenet2012's features, `count` JPEG images of side x 0.875 side)."""
    import tensorflow_datasets as tfds
    from PIL import Image

    def picture(rng):
        """Low-frequency colour fields plus a little noise: JPEG sizes like photographs' (not noise's)."""
        coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize(
            (side, side * 7 // 8), Image.BICUBIC)
        fine = rng.normal(0, 6, (side * 7 // 8, side, 3))
        return np.clip(np.asarray(coarse, np.float32) + fine, 0, 255).astype(np.uint8)

    class SyntheticImagenet(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(num_classes=CLASSES),
                "file_name": tfds.features.Text()}), supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            rng = np.random.default_rng(0)
            for i in range(count):
                yield i, {"image": picture(rng), "label": i % CLASSES, "file_name": f"{i}.JPEG"}

    SyntheticImagenet(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def recipe_settings():
    """The ResNet runs' training input: configs/datasets/imagenet2012.yaml with imagenet_resnet.yaml's changes."""
    from ngl_keras import config

    grid = config.check_grid(config.grid(ROOT / "configs" / "imagenet_resnet.yaml"))
    base = config.read_yaml(ROOT / "configs" / "datasets" / "imagenet2012.yaml")
    return config.build(config.DatasetSettings, config.merge(base, grid.settings["imagenet2012"]), "imagenet_resnet")


try:
    import grain.python as grain
except ImportError:  # optional: without it, Grain's row is left out
    grain = None

if grain is not None:
    class CropAndFlip(grain.RandomMapTransform):
        """Grain's per-image step: our crop, then a horizontal flip with probability 0.5, from the
        example's own random generator."""

        def __init__(self, settings):
            self.settings = settings

        def random_map(self, example, rng):
            from ngl_keras.data import recipe_input

            image = recipe_input.crop_on_host(np.asarray(example["image"]), self.settings, True, rng)
            return (image[:, ::-1] if rng.random() < 0.5 else image), example["label"]

    class Targets(grain.MapTransform):
        """Grain's per-batch step: float32 images and one-hot targets, as `ArrayBatches` gives them."""

        def map(self, batch):
            images, labels = batch
            return images.astype("float32"), np.eye(CLASSES, dtype="float32")[labels]


def grain_loader(source, settings, workers):
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # Grain reads its absl flags (their defaults here); a script not run by absl.app
    sampler = grain.IndexSampler(len(source), shard_options=grain.NoSharding(), shuffle=True, num_epochs=1, seed=0)
    return grain.DataLoader(data_source=source, sampler=sampler, worker_count=workers,
                            operations=[CropAndFlip(settings), grain.Batch(BATCH, drop_remainder=True), Targets()])


def ours(source, settings, workers=1):
    from ngl_keras import data

    batches = data.ArrayBatches(source, classes=CLASSES, batch_size=BATCH, shuffle_seed=0, recipe=settings,
                                training=True, channels=3)
    batches.workers = workers  # PyDataset's own setting: Keras's worker threads
    return batches


def trivial_model():
    import keras

    model = keras.Sequential([keras.Input((224, 224, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(CLASSES, activation="softmax")])
    model.compile("sgd", "categorical_crossentropy")
    x = np.zeros((BATCH, 224, 224, 3), "float32")
    model.fit(x, np.eye(CLASSES, dtype="float32")[np.zeros(BATCH, int)], batch_size=BATCH, verbose=0)  # compiles
    return model


def delivered(model, loader, steps, name):
    """Images per second that `model.fit` gets from `loader` after its first `SKIPPED` batches."""
    import keras

    print(f"measuring {name}", file=sys.stderr, flush=True)  # a hang shows where

    ends = []
    clock = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter()))
    model.fit(loader, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock])
    return BATCH * (len(ends) - SKIPPED) / (ends[-1] - ends[SKIPPED - 1])


def training_need():
    """(label, images/s) of a ResNet101 training step as recorded: a GPU's if benchmarks/results/ has one."""
    for path in sorted((ROOT / "benchmarks" / "results").glob("imagenet-step/gpu*.txt")) + [STEP_RECORD]:
        if path.exists():
            result = next(r for r in json.loads(path.read_text().splitlines()[-2])["results"]
                          if r["model"] == "resnet101")
            return str(path.relative_to(ROOT)), 1000.0 / result["recipe_ms_per_image"]
    return None, None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=640, help="images in the synthetic dataset")
    parser.add_argument("--side", type=int, default=224, help="width of the JPEGs (height 7/8 of it)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--build", help=argparse.SUPPRESS)  # the subprocess that prepares the dataset
    args = parser.parse_args()
    if args.build:
        build(args.build, args.images, args.side)
        return
    with tempfile.TemporaryDirectory() as data_dir:
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--build", data_dir, "--images", str(args.images),
                        "--side", str(args.side)], check=True, capture_output=True,
                       env={**os.environ, "KERAS_BACKEND": "tensorflow"})
        built = time.perf_counter() - started
        results = measure(data_dir, args)
    import keras

    label, need = training_need()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    sizes = f"{args.images} JPEGs of {args.side}x{args.side * 7 // 8} px"
    grain_version = metadata.version("grain") if grain else "absent"
    now = datetime.datetime.now(datetime.timezone.utc)
    tensorflow = "yes" if "tensorflow" in sys.modules else "no"
    print(f"# imagenet_input: commit {commit.strip() or 'unknown'}, {now:%Y-%m-%d %H:%M} UTC, "
          f"keras {keras.__version__} on {keras.backend.backend()}, grain {grain_version}, "
          f"{sizes} (prepared in {built:.0f} s), batch {BATCH}, crop 224 + flip, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; tensorflow imported: {tensorflow}")
    for name, rates in results.items():
        print(f"{name:<48}{max(rates):>7.0f} images/s   (rounds: {', '.join(f'{r:.0f}' for r in rates)})")
    if need is not None:
        print(f"{'ResNet101 train step with the recipe':<48}{need:>7.1f} images/s   ({label})")
    print(json.dumps({"images": args.images, "side": args.side, "batch": BATCH, "workers": args.workers,
                      "images_per_second": {k: round(max(v), 1) for k, v in results.items()},
                      "rounds": {k: [round(r, 1) for r in v] for k, v in results.items()},
                      "resnet101_step_images_per_second": None if need is None else round(need, 2),
                      "resnet101_step_source": label}))


def measure(data_dir, args):
    from ngl_keras import data

    source = data.load_split(DATASET, "train", data_dir=data_dir)  # a RecordSource over tfds.data_source
    settings = recipe_settings()
    model = trivial_model()
    steps = args.images // BATCH
    w = args.workers
    # Keras's worker processes (use_multiprocessing) are forks of this JAX process: left out, they hung here
    # (os.fork() with JAX's threads running; 10 minutes, 14 s of CPU time).
    loaders = {"ours: ArrayBatches, 1 worker (as runs use it)": lambda: ours(source, settings),
               f"ours: ArrayBatches, {w} worker threads": lambda: ours(source, settings, w)}
    if grain is not None:
        loaders[f"Grain DataLoader, {w} worker processes"] = lambda: grain_loader(source.source, settings, w)
    rates = {name: [] for name in loaders}
    for _ in range(ROUNDS):  # interleaved, best of each: the least disturbed run on a shared machine
        for name, loader in loaders.items():
            rates[name].append(delivered(model, loader(), steps, name))
    return rates


if __name__ == "__main__":
    main()
