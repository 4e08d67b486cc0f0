"""The Python API's loss search: the paper's GP search on your own arrays and Keras model, with the
validation error of that model as the fitness, through the code of search_gp.py (the same evolution,
keras-tuner oracle, chief/worker mode and resume). The arrays and the model function are checked as
`ngl_keras.evaluate` checks them (`own_data.sources`), before anything trains.

    import ngl_keras
    fame = ngl_keras.gp.search(model_fn, (x_train, y_train), (x_val, y_val), out="search/mine")
"""

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

from ngl_keras import config as config_module
from ngl_keras.gp import search_run, search_settings
from ngl_keras.gp.search_directory import CONFIG_FILE
from ngl_keras.own_data import configs_directory, dataset_settings, sources
from ngl_keras.settings import build

SEARCH_CONFIG = Path("api") / "search.yaml"
# The API's search names its in-memory data and model function in `fitness` under this key (their
# content and config hashes), so that a directory is resumed only with the same ones.
SOURCES_KEY = "sources"


@dataclass(frozen=True)
class Fitness(search_settings.Fitness):
    """The API search's `fitness`: a search config's, and the hashes of the arrays and of the model
    it trains (`sources`, set here and never by a config)."""

    sources: dict = None


@dataclass(frozen=True)
class Search(search_settings.Search):
    """The API's search settings: a search config's, its fitness naming the arrays and the model."""

    fitness: Fitness


def search(model_fn, train, validation, *, out, config=None, population=None, generations=None, seed=None,
           epochs=None, runs=None, batch_size=None, name="arrays", classes=None, log=print, configs_dir=None):
    """The paper's GP loss search with the validation error of `model_fn`'s model, trained on
    `train`, as the fitness; return the hall of fame (a list of {"rank", "formula", "display",
    "latex", "fitness", ...}, best first, as hall_of_fame.json), or None in a worker.

    model_fn, train, validation, classes: as for `ngl_keras.evaluate`.
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

    configs_dir = configs_directory(configs_dir)
    dataset, model = sources(model_fn, {"train": train, "validation": validation}, name, classes)
    user = {} if config is None else config if isinstance(config, dict) else config_module.read_yaml(config)
    if not isinstance(user, dict):
        raise ValueError(f"config must be a mapping or a YAML file of one; got {type(user).__name__}.")
    given = sorted(set(user.get("fitness") or {}) & {"datasets", "model", "kind", SOURCES_KEY})
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
        **dataset_settings(batch_size=batch_size, settings=own_settings),
        "splits": {"train": "train", "validation": "validation", "test": None}}}}
    if runs is not None:
        fitness["runs"] = runs
    checked = search_settings.load_config({**cfg, "fitness": fitness},
                                          {"population": population, "generations": generations, "seed": seed,
                                           "epochs": epochs},
                                          defaults=configs_dir / "search" / search_settings.DEFAULTS_FILE)
    named = {"data": {"name": name, "sha256": dataset.fingerprint}, "model": model.identity()}
    settings = checked.to_json()
    cfg = build(Search, {**settings, "fitness": {**settings["fitness"], SOURCES_KEY: named}}, "search config")
    if model.fingerprint is None and (Path(out) / CONFIG_FILE).exists():
        raise ValueError(f"{out} holds a search, and model_fn's model has no Keras config (a subclassed model "
                         "without get_config): it cannot be told from another model; implement get_config or "
                         "use a new out.")
    if cfg.fitness.recycle_every:
        try:
            pickle.dumps(model.function)
        except Exception as error:
            raise ValueError(f"model_fn cannot be sent to the training process (fitness recycle_every "
                             f"{cfg.fitness.recycle_every}): {type(error).__name__}; define it at module "
                             "level, or set recycle_every: 0.") from None
    evo = search_run.run(cfg, out, configs_dir, log=log,
                         sources=Sources({name: dataset}, {model.name: model}))
    if evo is None:
        return None
    return json.loads((Path(out) / "hall_of_fame.json").read_text())
