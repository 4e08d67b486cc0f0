"""Train-step time of one model with each loss, against CE in the same run.

    python benchmarks/loss_overhead.py --quick      # small_cnn 28x28x1, batch 128: < 2 minutes on 2 CPU cores
    python benchmarks/loss_overhead.py              # more repetitions, eager mode too
    python benchmarks/loss_overhead.py --model resnet50 --image-size 75 --dtype-policy mixed_bfloat16

Modes: "graph" (Keras's default compiled train step: tf.function; TensorFlow only), "xla"
(jit_compile=True: XLA on TensorFlow, jax.jit on JAX) and "eager" (run_eagerly=True). The default
modes depend on the Keras backend (KERAS_BACKEND): graph and xla on TensorFlow, xla on JAX, eager
on PyTorch; the full mode adds eager. Repetitions are interleaved across losses so that drift of
the machine hits every loss alike; each figure is the median step time over repetitions.
The last line is JSON: {"ratio_to_ce": {...backend's default mode...}, "ratio_to_ce_<mode>": {...},
"backend": ..., "device": ...}.
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ngl_keras  # noqa: E402  (first: it loads Keras with the frameworks' start-up banners filtered)
from ngl_keras import models  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

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
DEFAULT_MODES = {"tensorflow": ["graph", "xla"], "jax": ["xla"], "torch": ["eager"]}
MODES = ("graph", "xla", "eager")


def device_name():
    """The accelerator (or CPU) the backend computes on, in words."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform}: {device.device_kind}"
    if backend == "torch":
        import torch

        return f"cuda: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return "gpu: " + tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
    return "cpu"


def check_modes(modes):
    backend = keras.backend.backend()
    for mode in modes:
        if mode not in MODES:
            raise SystemExit(f"--modes: unknown mode {mode!r}; accepted: {', '.join(MODES)}.")
        if mode == "graph" and backend != "tensorflow":
            raise SystemExit(f"--modes: 'graph' exists on the TensorFlow backend only; this is {backend}.")
    return modes


def build(name, mode, model_name, size, channels):
    keras.utils.set_random_seed(0)
    model = models.build_model(model_name, 10, size, channels=channels,
                               output_activation="linear" if name in LOGITS else "softmax")
    model.compile(optimizer="adam", loss=LOSSES[name](), jit_compile=mode == "xla",
                  run_eagerly=mode == "eager")
    return model


def measure(names, modes, repetitions, steps, model_name, size, batch):
    channels = models.info(model_name).channels
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch, size, size, channels)).astype("float32")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, batch)]
    results = {}
    for mode in modes:
        built = {name: build(name, mode, model_name, size, channels) for name in names}
        for model in built.values():  # trace, compile and warm up
            for _ in range(3):
                model.train_on_batch(x, y)
        times = {name: [] for name in names}
        for _ in range(repetitions):
            for name, model in built.items():
                start = time.perf_counter()
                for _ in range(steps):
                    loss = model.train_on_batch(x, y)
                float(np.asarray(loss))  # the last step has finished on the device
                times[name].append((time.perf_counter() - start) / steps)
        results[mode] = times
        del built
        keras.backend.clear_session()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", default="small_cnn", choices=sorted(models.MODELS))
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dtype-policy", default="float32",
                        help="Keras dtype policy: float32, mixed_float16 or mixed_bfloat16")
    parser.add_argument("--modes", nargs="+", help=f"of {', '.join(MODES)}; default: by backend")
    parser.add_argument("--losses", nargs="+", choices=sorted(LOSSES), help="default: all (CE is always measured)")
    parser.add_argument("--repetitions", type=int)
    parser.add_argument("--steps", type=int)
    args = parser.parse_args()
    models.check_image_size(args.model, args.image_size)
    names = [n for n in LOSSES if n == "ce" or not args.losses or n in args.losses]
    backend = keras.backend.backend()
    modes = check_modes(args.modes or DEFAULT_MODES.get(backend, ["eager"]) + ([] if args.quick else ["eager"]))
    keras.mixed_precision.set_global_policy(args.dtype_policy)
    repetitions = args.repetitions or (5 if args.quick else 15)
    steps = args.steps or (5 if args.quick else 10)
    device = device_name()
    print(f"backend {backend}, device {device}, model {args.model} {args.image_size}px, "
          f"batch {args.batch_size}, dtype policy {args.dtype_policy}")
    results = measure(names, modes, repetitions, steps, args.model, args.image_size, args.batch_size)
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
        summary[mode] = {k: v for k, v in ratios.items() if k != "ce"}
    out = {"ratio_to_ce": summary[modes[0]]}
    out.update({f"ratio_to_ce_{mode}": ratios for mode, ratios in summary.items()})
    out.update(backend=backend, device=device, model=args.model, image_size=args.image_size,
               batch_size=args.batch_size, dtype_policy=args.dtype_policy,
               ms_per_step_ce={mode: round(1000 * statistics.median(t["ce"]), 3) for mode, t in results.items()})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
