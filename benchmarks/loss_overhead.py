"""Train-step time of small_cnn (28x28x1, batch 128) with each loss, against CE in the same run.

    python benchmarks/loss_overhead.py --quick      # < 2 minutes on 2 CPU cores
    python benchmarks/loss_overhead.py              # more repetitions, eager mode too

Modes: "graph" (Keras's default tf.function train step), "xla" (jit_compile=True) and, in the
full mode, "eager" (run_eagerly=True). Repetitions are interleaved across losses so that drift
of the machine hits every loss alike; each figure is the median step time over repetitions.
The last line is JSON: {"ratio_to_ce": {...graph mode...}, "ratio_to_ce_xla": {...}, ...}.
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import ngl_keras  # noqa: E402
from ngl_keras import models  # noqa: E402

LOSSES = {
    "ce": lambda: keras.losses.CategoricalCrossentropy(),
    "ngl": lambda: ngl_keras.NGL(),
    "expression_ngl": lambda: ngl_keras.ExpressionLoss("exp(2.4092 - p*(1+y)) - cos(cos(sin(p)))"),
    "anyloss_f1": lambda: ngl_keras.AnyLoss(metric="fbeta"),
    "sce": lambda: ngl_keras.SymmetricCrossEntropy(),
    "focal": lambda: keras.losses.CategoricalFocalCrossentropy(),
    "bi_tempered": lambda: ngl_keras.BiTemperedLogisticLoss(t1=0.8, t2=1.2),
}
LOGITS = {"bi_tempered"}


def build(name, mode):
    keras.utils.set_random_seed(0)
    model = models.build_model("small_cnn", 10, 28, channels=1,
                               output_activation="linear" if name in LOGITS else "softmax")
    model.compile(optimizer="adam", loss=LOSSES[name](), jit_compile=mode == "xla",
                  run_eagerly=mode == "eager")
    return model


def measure(modes, repetitions, steps):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(128, 28, 28, 1)).astype("float32")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, 128)]
    results = {}
    for mode in modes:
        built = {name: build(name, mode) for name in LOSSES}
        for model in built.values():  # trace, compile and warm up
            for _ in range(3):
                model.train_on_batch(x, y)
        times = {name: [] for name in LOSSES}
        for _ in range(repetitions):
            for name, model in built.items():
                start = time.perf_counter()
                for _ in range(steps):
                    model.train_on_batch(x, y)
                times[name].append((time.perf_counter() - start) / steps)
        results[mode] = times
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    modes = ["graph", "xla"] if args.quick else ["graph", "xla", "eager"]
    repetitions, steps = (5, 5) if args.quick else (15, 10)
    results = measure(modes, repetitions, steps)
    summary = {}
    for mode, times in results.items():
        ce = statistics.median(times["ce"])
        print(f"\nmode {mode}: {repetitions} interleaved repetitions of {steps} steps")
        print(f"{'loss':<16}{'median ms/step':>16}{'IQR ms':>10}{'ratio to CE':>14}")
        ratios = {}
        for name, values in times.items():
            q1, _, q3 = statistics.quantiles(values, n=4)
            median = statistics.median(values)
            ratios[name] = round(median / ce, 4)
            print(f"{name:<16}{1000 * median:>16.2f}{1000 * (q3 - q1):>10.2f}{ratios[name]:>14.3f}")
        summary[mode] = ratios
    out = {"ratio_to_ce": {k: v for k, v in summary["graph"].items() if k != "ce"},
           "ratio_to_ce_xla": {k: v for k, v in summary["xla"].items() if k != "ce"}}
    if "eager" in summary:
        out["ratio_to_ce_eager"] = {k: v for k, v in summary["eager"].items() if k != "ce"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
