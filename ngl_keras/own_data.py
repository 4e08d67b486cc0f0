"""Your own problem: in-memory arrays and any Keras model, evaluated through the code of
train_small.py.

`evaluate` trains a grid of losses × runs as train_small.py does (`grid.plan` and
`training.run_grid`: the same records, resume and table). The arrays become a dataset
(`data.from_arrays`) and the model function a model (`models.from_function`) that a grid names
like any other (`grid.Sources`); both are checked here, before anything trains. The loss
search on the same arrays and model is `ngl_keras.gp.search` (ngl_keras/gp/api.py).

    import ngl_keras
    fame = ngl_keras.gp.search(model_fn, (x_train, y_train), (x_val, y_val), out="search/mine")
    result = ngl_keras.evaluate(["ce", fame[0]["formula"]], model_fn, (x_train, y_train),
                                (x_val, y_val), (x_test, y_test), epochs=5, runs=3)
    print(result.table)
"""

import tempfile
from pathlib import Path
from typing import NamedTuple

from ngl_keras import config as config_module
from ngl_keras.resources import configs_dir as package_configs


class Evaluation(NamedTuple):
    """What `evaluate` returns: every run's record (as in runs.jsonl) and the table as
    train_small.py prints it."""

    records: list
    table: str


def sources(model_fn, splits, name="arrays", classes=None):
    """(data.DatasetInfo, models.ModelFunction) of the user's arrays and model function, checked
    (one-line ValueErrors), as a `grid.Sources`-ready pair."""
    from ngl_keras import data, models

    dataset = data.from_arrays(splits, name, classes)
    model = models.from_function(model_fn, dataset.classes, dataset.arrays["train"][0][:2])
    return dataset, model


def configs_directory(configs_dir):
    """`configs_dir` (default: the package's configs, `resources.configs_dir`), checked to hold the
    arrays' dataset settings."""
    configs_dir = Path(configs_dir) if configs_dir is not None else package_configs()
    if not (configs_dir / "datasets" / config_module.ARRAYS_FILE).is_file():
        raise ValueError(f"configs directory {str(configs_dir)!r} holds no datasets/{config_module.ARRAYS_FILE}; "
                         "pass configs_dir= the repository's configs/ directory.")
    return configs_dir


def dataset_settings(epochs=None, batch_size=None, optimizer=None, learning_rate=None, settings=None):
    """The dataset settings the arguments give, over `settings` (any key of configs/datasets/arrays.yaml)."""
    if settings is not None and not isinstance(settings, dict):
        raise ValueError(f"settings must be a mapping of dataset settings (configs/datasets/arrays.yaml's keys); "
                         f"got {type(settings).__name__}.")
    out = dict(settings or {})
    for key, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value is not None:
            out[key] = value
    if optimizer is not None or learning_rate is not None:
        out["optimizer"] = {**out.get("optimizer", {}), **({"name": optimizer} if optimizer is not None else {}),
                            **({"learning_rate": learning_rate} if learning_rate is not None else {})}
    return out


def evaluate(losses, model_fn, train, validation, test, *, epochs=None, batch_size=None, runs=1, seed=0,
             optimizer=None, learning_rate=None, settings=None, out=None, name="arrays", classes=None,
             strategy="auto", mixed_precision=False, verbose=0, log=print, configs_dir=None):
    """Train `model_fn`'s model with each of `losses` on (x, y) arrays and test it; return an
    `Evaluation`: the records and the Table-2 style table (CE's test accuracy, every other loss
    as % change against it), as train_small.py writes and prints them.

    losses: registry names, formulas over p and y, or mappings {"name", "label", arguments...}
        (a grid's `losses`).
    model_fn: `model_fn(num_classes)` returns a new, uncompiled keras.Model that takes the
        examples of `train` as given (float32) and ends in softmax.
    train, validation, test: (x, y) pairs of arrays: x of shape (N, ...), y integer labels (N,) or
        one-hot (N, classes). `classes` defaults to the one-hot width or the largest label + 1.
    epochs, batch_size, optimizer ("adam" or "sgd"), learning_rate, settings (a mapping of any
        configs/datasets/arrays.yaml key: reduce_lr, augmentation, optimizer momentum, ...): the
        training settings, over configs/datasets/arrays.yaml.
    runs, seed: run r of every loss uses seed `seed + r` (paired runs: the same initial weights
        and batches for every loss).
    out: a directory for runs.jsonl, the per-run logs and table.md/csv; the same call resumes there
        (finished runs are skipped, an interrupted run continues from its last epoch), and other
        arrays, another model or other settings in it are refused. None: a temporary directory.

    A run's identity holds a hash of the arrays and of the model's Keras config (and the function's
    qualified name); a model without a config (subclassed, without get_config) cannot be told from
    another, so it is refused with an `out` that already holds records.
    """
    from ngl_keras import records, report, training
    from ngl_keras.grid import Sources, plan

    configs_dir = configs_directory(configs_dir)
    dataset, model = sources(model_fn, {"train": train, "validation": validation, "test": test}, name, classes)
    if isinstance(losses, (str, dict)):
        losses = [losses]
    grid = {"datasets": [name], "models": [model.name], "losses": list(losses), "runs": runs, "seed": seed,
            "settings": {name: dataset_settings(epochs, batch_size, optimizer, learning_rate, settings)}}
    runs = plan(grid, configs_dir, sources=Sources({name: dataset}, {model.name: model}))
    if out is None:
        with tempfile.TemporaryDirectory(prefix="ngl_keras-") as directory:
            return _evaluate(runs, directory, strategy, mixed_precision, verbose, log, training, report)
    path = Path(out) / "runs.jsonl"
    if model.fingerprint is None and records.read_records(path):
        raise ValueError(f"{out} holds records, and model_fn's model has no Keras config (a subclassed model "
                         "without get_config): they cannot be told from another model's; implement get_config "
                         "or use a new out.")
    return _evaluate(runs, out, strategy, mixed_precision, verbose, log, training, report)


def _evaluate(runs, out, strategy, mixed_precision, verbose, log, training, report):
    records = training.run_grid(runs, out, strategy=strategy, mixed_precision=mixed_precision, verbose=verbose,
                                log=log)
    return Evaluation(records, report.write(records, out, runs_option="runs=3"))
