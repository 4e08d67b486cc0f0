"""Your own problem: in-memory arrays and any Keras model, through the code of the two CLIs.

`evaluate` trains a grid of losses × runs as train_small.py does (`grid.plan` and
`training.run_grid`: the same records, resume and table); `search` runs the loss search of
search_gp.py (`gp.search.run`: the same evolution, keras-tuner oracle, chief/worker mode and
resume) with the validation error of the user's model as the fitness. The arrays become a dataset
(`data.from_arrays`) and the model function a model (`models.from_function`) that a grid names
like any other (`grid.Sources`); both are checked here, before anything trains.

    import ngl_keras
    fame = ngl_keras.gp.search(model_fn, (x_train, y_train), (x_val, y_val), out="search/mine")
    result = ngl_keras.evaluate(["ce", fame[0]["formula"]], model_fn, (x_train, y_train),
                                (x_val, y_val), (x_test, y_test), epochs=5, runs=3)
    print(result.table)
"""

import json
import pickle
import tempfile
from pathlib import Path
from typing import NamedTuple

from ngl_keras import config as config_module

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"  # the repository's configs/
SEARCH_CONFIG = Path("api") / "search.yaml"


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


def _configs(configs_dir):
    configs_dir = Path(configs_dir) if configs_dir is not None else CONFIGS_DIR
    if not (configs_dir / "datasets" / config_module.ARRAYS_FILE).is_file():
        raise ValueError(f"configs directory {str(configs_dir)!r} holds no datasets/{config_module.ARRAYS_FILE}; "
                         "pass configs_dir= the repository's configs/ directory.")
    return configs_dir


def _settings(epochs=None, batch_size=None, optimizer=None, learning_rate=None, settings=None):
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

    configs_dir = _configs(configs_dir)
    dataset, model = sources(model_fn, {"train": train, "validation": validation, "test": test}, name, classes)
    if isinstance(losses, (str, dict)):
        losses = [losses]
    grid = {"datasets": [name], "models": [model.name], "losses": list(losses), "runs": runs, "seed": seed,
            "settings": {name: _settings(epochs, batch_size, optimizer, learning_rate, settings)}}
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
    return Evaluation(records, report.write(records, out))


def search(model_fn, train, validation, *, out, config=None, population=None, generations=None, seed=None,
           epochs=None, runs=None, batch_size=None, name="arrays", classes=None, log=print, configs_dir=None):
    """The paper's GP loss search with the validation error of `model_fn`'s model, trained on
    `train`, as the fitness; return the hall of fame (a list of {"rank", "formula", "display",
    "latex", "fitness", ...}, best first, as hall_of_fame.json), or None in a worker.

    model_fn, train, validation, classes: as for `evaluate`.
    config: a search config (a YAML path or a mapping) merged over configs/api/search.yaml and
        configs/search/defaults.yaml, as search_gp.py merges its own; its fitness takes `runs`,
        `epochs`, `limit_train`, `references`, `recycle_every` and `settings: {<name>: {...}}` (the
        dataset settings, as in `evaluate`); the arrays and the model are the arguments.
    population, generations, seed, epochs, runs, batch_size: over the config.
    out: the search directory; the same call resumes there (another config, other arrays or another
        model are refused). Distributed as search_gp.py: every process makes this call with
        KERASTUNER_TUNER_ID (chief, worker0, ...), KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT set.

    Trainings run in this process by default (`recycle_every: 0`); with N > 0 they run in a child
    process replaced every N candidates, and model_fn must then be picklable (a module-level function).
    """
    from ngl_keras.grid import Sources
    from ngl_keras.gp import search as search_module

    configs_dir = _configs(configs_dir)
    dataset, model = sources(model_fn, {"train": train, "validation": validation}, name, classes)
    user = {} if config is None else config if isinstance(config, dict) else config_module.read_yaml(config)
    if not isinstance(user, dict):
        raise ValueError(f"config must be a mapping or a YAML file of one; got {type(user).__name__}.")
    given = sorted(set(user.get("fitness") or {}) & {"datasets", "model", "kind", search_module.SOURCES_KEY})
    if given:
        raise ValueError(f"config fitness: {', '.join(given)} cannot be set here: the fitness trains model_fn on "
                         "the arrays given (leave them out).")
    cfg = config_module.merge(config_module.read_yaml(configs_dir / SEARCH_CONFIG), user)
    others = sorted(set(cfg["fitness"].get("settings") or {}) - {name})
    if others:
        raise ValueError(f"config fitness settings name {', '.join(map(repr, others))}; the arrays are named "
                         f"{name!r} (the name argument): give their settings under it.")
    own_settings = (cfg["fitness"].get("settings") or {}).get(name, {})
    fitness = {**cfg["fitness"], "datasets": [name], "model": model.name, "settings": {name: {
        **_settings(batch_size=batch_size, settings=own_settings),
        "splits": {"train": "train", "validation": "validation", "test": None}}}}
    if runs is not None:
        fitness["runs"] = runs
    cfg = search_module.load_config({**cfg, "fitness": fitness},
                                    {"population": population, "generations": generations, "seed": seed,
                                     "epochs": epochs},
                                    defaults=configs_dir / "search" / search_module.DEFAULTS_FILE)
    cfg["fitness"][search_module.SOURCES_KEY] = {"data": {"name": name, "sha256": dataset.fingerprint},
                                                 "model": model.identity()}
    if model.fingerprint is None and (Path(out) / search_module.CONFIG_FILE).exists():
        raise ValueError(f"{out} holds a search, and model_fn's model has no Keras config (a subclassed model "
                         "without get_config): it cannot be told from another model; implement get_config or "
                         "use a new out.")
    if cfg["fitness"].get("recycle_every", 0):
        try:
            pickle.dumps(model.function)
        except Exception as error:
            raise ValueError(f"model_fn cannot be sent to the training process (fitness recycle_every "
                             f"{cfg['fitness']['recycle_every']}): {type(error).__name__}; define it at module "
                             "level, or set recycle_every: 0.") from None
    evo = search_module.run(cfg, out, configs_dir, log=log,
                            sources=Sources({name: dataset}, {model.name: model}))
    if evo is None:
        return None
    return json.loads((Path(out) / "hall_of_fame.json").read_text())
