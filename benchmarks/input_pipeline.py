"""Images per second of the training input pipeline against Keras 2's ImageDataGenerator,
and the share of a real training step spent waiting for input.

    python benchmarks/input_pipeline.py --quick     # < 2 minutes on 2 CPU cores
    python benchmarks/input_pipeline.py

Both augment the same 32x32x3 uint8 images (horizontal flip, width/height shift 0.1, zoom 0.2,
rescale to [0, 1]) in batches of 128 (ours: tf.data with the three transforms fused into one
separable bilinear resampling per batch, compiled by XLA); ImageDataGenerator comes from the `tf-keras` package
(benchmark only; needs scipy). Each side is warmed up, then timed over whole epochs.
Input wait: one epoch of small_cnn on real Fashion-MNIST (the Debian package) through the
pipeline, against the same number of steps on one batch already in memory.
The last line is JSON: {"speedup_vs_imagedatagenerator": ..., "input_wait_fraction": ...}.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ngl_keras import data, models  # noqa: E402  (first: it loads TensorFlow with its start-up banners filtered)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

BATCH = 128


def ours(images, labels, epochs):
    ds = data.input_pipeline((images, labels), classes=10, image_size=32, channels=3,
                             preprocess=models.scale_to_unit, batch_size=BATCH,
                             augmentation=data.Augmentation(), shuffle_seed=0)
    for _ in ds:  # warm-up epoch: traces the map function and fills the cache
        pass
    start = time.perf_counter()
    count = 0
    for _ in range(epochs):
        for x, _ in ds:
            count += int(x.shape[0])
    return count / (time.perf_counter() - start)


def image_data_generator(images, labels, epochs):
    from tf_keras.preprocessing.image import ImageDataGenerator

    generator = ImageDataGenerator(horizontal_flip=True, width_shift_range=0.1, height_shift_range=0.1,
                                   zoom_range=0.2, rescale=1.0 / 255)
    flow = generator.flow(images, np.eye(10)[labels], batch_size=BATCH, seed=0)
    steps = int(np.ceil(len(images) / BATCH))
    for _ in range(min(steps, 5)):
        next(flow)
    start = time.perf_counter()
    count = 0
    for _ in range(epochs * steps):
        x, _ = next(flow)
        count += len(x)
    return count / (time.perf_counter() - start)


def input_wait_fraction(limit):
    import keras

    images, labels = data.load_split("fashion_mnist", "train[:90%]", limit=limit)
    ds = data.input_pipeline((images, labels), classes=10, image_size=28, channels=1,
                             preprocess=models.scale_to_unit, batch_size=BATCH,
                             augmentation=data.Augmentation(), shuffle_seed=0)
    keras.utils.set_random_seed(0)
    model = models.build_model("small_cnn", 10, 28, channels=1)
    model.compile(optimizer="adam", loss="categorical_crossentropy")  # Keras's default train step
    x, y = next(iter(ds))
    steps = int(np.ceil(len(images) / BATCH))
    resident = tf.data.Dataset.from_tensors((x, y)).repeat(steps)
    model.fit(ds, epochs=1, verbose=0)  # warm-up: cache, traces
    model.fit(resident, epochs=1, verbose=0)
    times = {"pipeline": [], "resident": []}
    for _ in range(2):  # interleaved, best of two: the least disturbed epoch of each
        for name, source in (("pipeline", ds), ("resident", resident)):
            start = time.perf_counter()
            model.fit(source, epochs=1, verbose=0)
            times[name].append(time.perf_counter() - start)
    with_pipeline, compute_only = min(times["pipeline"]), min(times["resident"])
    return max(0.0, with_pipeline - compute_only) / with_pipeline, with_pipeline, compute_only


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, epochs, limit = (5000, 2, 12800) if args.quick else (20000, 3, None)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    fast = ours(images, labels, epochs)
    slow = image_data_generator(images, labels, max(1, epochs // 2))
    print(f"{'pipeline':<34}{'images/s':>12}")
    print(f"{'ngl_keras tf.data, fused transform':<34}{fast:>12.0f}")
    print(f"{'ImageDataGenerator (tf-keras)':<34}{slow:>12.0f}")
    print(f"speedup: {fast / slow:.1f}x")
    wait, total, compute = input_wait_fraction(limit)
    print(f"small_cnn epoch on Fashion-MNIST: {total:.1f} s through the pipeline, {compute:.1f} s on a "
          f"resident batch: input wait {100 * wait:.1f}% of step time")
    print(json.dumps({"speedup_vs_imagedatagenerator": round(fast / slow, 2),
                      "input_wait_fraction": round(wait, 4),
                      "images_per_second": {"ngl_keras": round(fast), "imagedatagenerator": round(slow)}}))


if __name__ == "__main__":
    main()
