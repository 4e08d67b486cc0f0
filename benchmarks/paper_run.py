"""One paper-setting run per loss on real Fashion-MNIST, on any Keras backend.

    python benchmarks/paper_run.py --quick                                # small_cnn, 1 epoch, 2,048 images
    python benchmarks/paper_run.py --model resnet50 --losses ce ngl      # configs/datasets/fashion_mnist.yaml
    KERAS_BACKEND=jax python benchmarks/paper_run.py --model resnet50 --losses ce ngl --out runs/gpu

The same model, losses, optimizer, ReduceLROnPlateau, splits, epochs and batch size as train_small
(read from configs/datasets/fashion_mnist.yaml), but the input comes from numpy arrays and the
pipeline's per-batch transforms (resize, gray to 3 channels, flip, shifts, zoom, the backbone's
preprocessing) are Keras layers in front of the model, so they run on the accelerator and need no
TensorFlow: this is how the paper setting runs on a JAX or PyTorch machine. Those layers come from
ngl_keras.layers.input_layers; the augmentation among them, RandomAffine, is the pipeline's fused
flip/shift/zoom resampling in keras.ops, so the whole train step compiles under jit_compile.
Each finished run is appended to OUT/runs.jsonl and skipped on a re-run (resumable).
The last line is JSON: {"accuracy": {"<loss>": ...}, "seconds_per_epoch": {...}, "device": ...}.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from ngl_keras import config, data, models, training  # noqa: E402
from ngl_keras.files import append_json_line, read_json_lines  # noqa: E402
from ngl_keras.layers import input_layers  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loss_overhead import device_name  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATASET = "fashion_mnist"


def build(model_name, loss_spec, settings, seed):
    loss = loss_spec.build()
    logits = training.takes_logits(loss)
    classes = data.info(DATASET).classes
    inner = models.build_model(model_name, classes, settings["image_size"], channels=1,
                               kernel_l2=loss_spec.kernel_l2(),
                               output_activation="linear" if logits else "softmax")
    inputs = keras.Input((28, 28, 1))
    x = input_layers(inputs, image_size=settings["image_size"], channels=models.info(model_name).channels,
                     preprocess=models.info(model_name).preprocess,
                     augmentation=data.Augmentation(**settings["augmentation"]), seed=seed)
    model = keras.Model(inputs, inner(x), name=model_name)
    return model, loss


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def arrays(spec, classes, limit=None):
    images, labels = data.load_split(DATASET, spec, limit=limit)
    if not isinstance(images, np.ndarray):
        raise SystemExit(f"{DATASET} IDX files not found in {data.FASHION_MNIST_DIR}; install the "
                         f"dataset-fashion-mnist package or set NGL_FASHION_MNIST_DIR.")
    data.check_labels(labels, classes, f"{DATASET} {spec}")
    return images.astype("float32"), np.eye(classes, dtype="float32")[labels]


def load(settings, limit):
    """(train, validation, test) arrays of the dataset's configured splits."""
    classes, splits = data.info(DATASET).classes, settings["splits"]
    return (arrays(splits["train"], classes, limit), arrays(splits["validation"], classes),
            arrays(splits["test"], classes))


def train_one(model_name, loss_spec, settings, seed, dtype_policy, jit_compile, splits, verbose):
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy(dtype_policy)
    (x_train, y_train), validation, (x_test, y_test) = splits
    model, loss = build(model_name, loss_spec, settings, seed)
    model.compile(optimizer=training._optimizer(settings), loss=loss, metrics=["accuracy"],
                  jit_compile=jit_compile)
    timer = EpochTimer()
    callbacks = training.schedule_callbacks(settings) + [timer]
    started = time.time()
    history = model.fit(x_train, y_train, batch_size=settings["batch_size"], epochs=settings["epochs"],
                        validation_data=validation, shuffle=True, callbacks=callbacks,
                        verbose=verbose).history
    losses = history.get("loss", [])
    finite = bool(losses) and all(np.isfinite(losses))
    accuracy = float(model.evaluate(x_test, y_test, batch_size=settings["batch_size"], verbose=0)[1]) \
        if finite else None
    # steady-state epoch time: the first epoch also compiles
    steady = statistics.median(timer.seconds[1:]) if len(timer.seconds) > 1 else timer.seconds[0]
    return {"loss": loss_spec.label, "model": model_name, "seed": seed, "epochs": settings["epochs"],
            "epochs_run": len(losses), "status": "ok" if finite else "diverged",
            "test_accuracy": accuracy, "train_images": len(x_train),
            "seconds_per_epoch": round(steady, 3), "first_epoch_s": round(timer.seconds[0], 3),
            "images_per_second": round(len(x_train) / steady, 1), "wall_time_s": round(time.time() - started, 1),
            "history": {k: [float(v) for v in vals] for k, vals in history.items()},
            "dtype_policy": dtype_policy, "jit_compile": jit_compile, "backend": keras.backend.backend(),
            "device": device_name(), "keras": keras.__version__, "python": platform.python_version()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch on 2,048 images, small_cnn unless --model")
    parser.add_argument("--model", choices=sorted(models.MODELS), help="default: resnet50 (small_cnn with --quick)")
    parser.add_argument("--losses", nargs="+", default=["ce", "ngl"])
    parser.add_argument("--epochs", type=int, help="default: the dataset config's")
    parser.add_argument("--limit-train", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype-policy", default="float32",
                        help="Keras dtype policy: float32 (the paper's), mixed_float16, mixed_bfloat16")
    parser.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "paper_run"))
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args()
    override = {}
    if args.quick:
        args.model, args.limit_train = args.model or "small_cnn", args.limit_train or 2048
        override.update(epochs=1, image_size=28 if args.model == "small_cnn" else None)
    args.model = args.model or "resnet50"
    override = {k: v for k, v in override.items() if v is not None}
    if args.epochs is not None:
        override["epochs"] = args.epochs
    settings = config.dataset_settings(DATASET, ROOT / "configs", override)
    models.check_image_size(args.model, settings["image_size"])
    specs = [training.LossSpec.parse(name) for name in args.losses]
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "runs.jsonl"

    def key(label):
        return [args.model, label, args.seed, settings["epochs"], args.limit_train, args.dtype_policy,
                keras.backend.backend()]

    done = {json.dumps(record["key"]): record for record in read_json_lines(path, required=("key",))}
    splits = None  # loaded when a run is left to train
    print(f"backend {keras.backend.backend()}, device {device_name()}, {args.model} "
          f"{settings['image_size']}px, {settings['epochs']} epochs, dtype policy {args.dtype_policy}")
    records = []
    for spec in specs:
        k = json.dumps(key(spec.label))
        if k in done:
            print(f"{spec.label}: already in {path}")
            records.append(done[k])
            continue
        splits = splits or load(settings, args.limit_train)
        record = train_one(args.model, spec, settings, args.seed, args.dtype_policy, jit, splits, args.verbose)
        record["key"] = key(spec.label)
        append_json_line(path, record)
        records.append(record)
    ce = next((r["test_accuracy"] for r in records if r["loss"] == "ce" and r["test_accuracy"]), None)
    print(f"\n{'loss':<14}{'test acc %':>11}{'vs CE %':>9}{'epochs':>8}{'s/epoch':>9}{'img/s':>9}")
    for r in records:
        acc = r["test_accuracy"]
        change = f"{100 * (acc - ce) / ce:+.2f}" if acc is not None and ce and r["loss"] != "ce" else ""
        shown = f"{100 * acc:.2f}" if acc is not None else r["status"]
        print(f"{r['loss']:<14}{shown:>11}{change:>9}{r['epochs_run']:>8}{r['seconds_per_epoch']:>9.1f}"
              f"{r['images_per_second']:>9.0f}")
    print(json.dumps({"accuracy": {r["loss"]: r["test_accuracy"] for r in records},
                      "seconds_per_epoch": {r["loss"]: r["seconds_per_epoch"] for r in records},
                      "backend": keras.backend.backend(), "device": device_name(), "model": args.model,
                      "epochs": settings["epochs"], "dtype_policy": args.dtype_policy}))


if __name__ == "__main__":
    main()
