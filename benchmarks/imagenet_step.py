"""Train-step time per image of the ImageNet models with the recipe, against a bare `model.fit`.

    python benchmarks/imagenet_step.py                         # CPU: batch 8, 2 warm-up + 5 timed steps
    python benchmarks/imagenet_step.py --batch-size 128 --steps 50 --dtype-policy mixed_bfloat16   # a GPU

For each model, on synthetic 224 px images with 1,000 classes, two runs of `model.fit` on the same
model and the same batches fed the same way (a Python generator):
(a) bare: Keras's AdamW with its defaults, CE on one-hot targets;
(b) recipe: `imagenet_recipe.adamw` (weight-decay exclusions, global clipping 5.0) with the warm-up
    + cosine schedule, and every batch through `MixUpOrCutMix` (label smoothing inside) before CE on
    the soft targets.
Each figure is the median time of a timed step (its steps interleaved with the other run's), per image. The ratio
(b) / (a) is the recipe's overhead (target <= 1.05). The last line is JSON.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ngl_keras  # noqa: E402,F401  (first: it loads Keras with the frameworks' start-up banners filtered)
from ngl_keras import imagenet_models, imagenet_recipe  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

NUM_CLASSES = 1000


class StepTimes(keras.callbacks.Callback):
    """Wall-clock seconds of every training batch, from its start to its end (the step function,
    which fetches its batch from the feed)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def synthetic_batch(batch_size, image_size, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    return images, rng.integers(0, NUM_CLASSES, batch_size)


def batches(images, labels, mix=None):
    """The same batch forever; through the recipe's mix layer when given (new mixing every step)."""
    one_hot = keras.utils.to_categorical(labels, NUM_CLASSES)
    while True:
        if mix is None:
            yield images, one_hot
        else:
            mixed, targets = mix(images, labels)
            yield keras.ops.convert_to_numpy(mixed), keras.ops.convert_to_numpy(targets)


def compiled(model, optimizer, jit_compile):
    model.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    return model


def measure(name, args):
    """Both runs on twin models (same weights), warmed up, then their timed steps interleaved one by
    one, in alternating order, so that a change of load on the machine hits both alike."""
    bare_model = imagenet_models.build(name, args.image_size, NUM_CLASSES)
    recipe_model = imagenet_models.build(name, args.image_size, NUM_CLASSES)
    recipe_model.set_weights(bare_model.get_weights())
    images, labels = synthetic_batch(args.batch_size, args.image_size)
    schedule = imagenet_recipe.learning_rate_schedule(args.batch_size, steps_per_epoch=args.steps,
                                                      epochs=args.warmup_steps + args.steps, warmup_epochs=1)
    runs = {
        "bare": (compiled(bare_model, keras.optimizers.AdamW(), args.jit_compile), batches(images, labels)),
        "recipe": (compiled(recipe_model, imagenet_recipe.adamw(recipe_model, schedule), args.jit_compile),
                   batches(images, labels, imagenet_recipe.MixUpOrCutMix(NUM_CLASSES, seed=0))),
    }
    times = {run: StepTimes() for run in runs}
    for run, (model, feed) in runs.items():
        model.fit(feed, steps_per_epoch=args.warmup_steps, epochs=1, verbose=0)
    for step in range(args.steps):
        order = list(runs) if step % 2 == 0 else list(runs)[::-1]   # ABBA: neither run always goes first
        for run in order:
            model, feed = runs[run]
            model.fit(feed, steps_per_epoch=1, epochs=1, verbose=0, callbacks=[times[run]])
    bare, recipe = (statistics.median(times[run].seconds) / args.batch_size for run in runs)
    return {"model": name, "parameters": bare_model.count_params(), "bare_ms_per_image": 1e3 * bare,
            "recipe_ms_per_image": 1e3 * recipe, "ratio": recipe / bare}


def header(args):
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    devices = [str(d) for d in keras.distribution.list_devices()]
    return (f"# imagenet_step: commit {commit}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}, "
            f"keras {keras.__version__} on {keras.backend.backend()}, devices {', '.join(devices)}, "
            f"policy {keras.config.dtype_policy().name}, batch {args.batch_size}, image {args.image_size}, "
            f"{args.warmup_steps} warm-up + {args.steps} timed steps, jit_compile {args.jit_compile}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet101,swin_t",
                        help=f"comma-separated, of {', '.join(imagenet_models.IMAGENET_MODELS)}")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first (tracing, compilation)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--dtype-policy", default=None, help="e.g. mixed_bfloat16 on a GPU")
    parser.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"])
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in imagenet_models.IMAGENET_MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; expected of {', '.join(imagenet_models.IMAGENET_MODELS)}")
    if args.batch_size < 2 or args.steps < 2 or args.warmup_steps < 1:
        parser.error("--batch-size and --steps must be at least 2 and --warmup-steps at least 1")
    args.jit_compile = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.dtype_policy:
        keras.config.set_dtype_policy(args.dtype_policy)
    print(header(args), flush=True)
    results = []
    for name in args.models:
        result = measure(name, args)
        results.append(result)
        print(f"{name:10s} {result['parameters']:>11,d} parameters   bare {result['bare_ms_per_image']:8.2f} ms/image"
              f"   recipe {result['recipe_ms_per_image']:8.2f} ms/image   ratio {result['ratio']:.3f}", flush=True)
    print(json.dumps({"backend": keras.backend.backend(), "results": results}))


if __name__ == "__main__":
    main()
