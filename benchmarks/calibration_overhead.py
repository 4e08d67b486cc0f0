"""The test step with and without calibration: `model.evaluate` (today's test accuracy) against one
prediction of the same test batches followed by the numpy calibration (`tasks.classification_scores`:
accuracy, NLL, ECE, mean confidence, the 15 reliability bins), the small CNN on the 10,000 Fashion-MNIST
test images (the Debian IDX files; random images of the same shape when absent).

    python benchmarks/calibration_overhead.py                 # about a minute on 2 CPU cores
    python benchmarks/calibration_overhead.py --repeats 9 --out benchmarks/results/calibration-overhead

Repetitions alternate the two so that drift of the machine hits both alike; each figure is the median
over repetitions. Both give the same accuracy (checked). Writes `<out>/<backend>.json`; the last line
printed is that JSON.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ngl_keras  # noqa: E402,F401  (first: it loads Keras with the frameworks' start-up banners filtered)
from ngl_keras import data, models, tasks  # noqa: E402
from ngl_keras.files import atomic_write  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402


def test_images(count):
    """(images (N, 28, 28, 1) uint8, labels (N,)) of the Fashion-MNIST test split, or random ones."""
    try:
        images, labels = data.fashion_mnist_idx()["test"]
        source = "fashion_mnist test (Debian IDX)"
    except Exception:
        rng = np.random.default_rng(0)
        images, labels = rng.integers(0, 256, (count, 28, 28, 1), np.uint8), rng.integers(0, 10, count)
        source = "random images"
    images = np.asarray(images)[:count]
    return images.reshape(len(images), 28, 28, 1), np.asarray(labels)[:count].astype(np.int64), source


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "calibration-overhead"))
    args = parser.parse_args(argv)
    images, labels, source = test_images(args.count)
    keras.utils.set_random_seed(0)
    model = models.build_model("small_cnn", 10, 28, channels=1)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    placement = data.placement()
    if placement.tf_data:
        test = data.input_pipeline((images, labels), classes=10, image_size=28, channels=1,
                                   preprocess=models.scale_to_unit, batch_size=args.batch_size)
    else:  # the model starts at its input layers on other backends; scale here as tf.data would
        test = data.ArrayBatches(((images / 255.0).astype("float32"), labels), classes=10,
                                 batch_size=args.batch_size)
    evaluated = float(model.evaluate(test, verbose=0)[1])      # warm-up: compiles both functions
    scores = tasks.classification_scores(model, test)
    assert abs(scores["test_accuracy"] - evaluated) < 1e-6, (scores["test_accuracy"], evaluated)
    times = {"evaluate": [], "predict_and_calibration": []}
    for _ in range(args.repeats):
        started = time.perf_counter()
        model.evaluate(test, verbose=0)
        times["evaluate"].append(time.perf_counter() - started)
        started = time.perf_counter()
        tasks.classification_scores(model, test)
        times["predict_and_calibration"].append(time.perf_counter() - started)
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {"backend": keras.backend.backend(), "input": placement.name, "images": len(labels), "source": source,
              "batch_size": args.batch_size, "repeats": args.repeats, "cpus": os.cpu_count(),
              "seconds": {k: [round(x, 4) for x in v] for k, v in times.items()},
              "median_seconds": {k: round(v, 4) for k, v in medians.items()},
              "ratio": round(medians["predict_and_calibration"] / medians["evaluate"], 3),
              "accuracy_evaluate": evaluated, "accuracy_predictions": scores["test_accuracy"]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / f"{result['backend']}.json", json.dumps(result, indent=1) + "\n")
    print(f"evaluate {medians['evaluate']:.3f} s, predict + calibration {medians['predict_and_calibration']:.3f} s "
          f"(median of {args.repeats}, {len(labels)} images): ratio {result['ratio']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
