"""The search's settings: a search config (YAML over configs/search/defaults.yaml, or the Python
API's mapping) checked and built into a `Search`, whose sections are described by the engine's own
settings classes, and turned into the engine's objects (primitive set, limits, rates, screening)."""

import copy
import typing
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Optional

from ngl_keras import config as config_module
from ngl_keras import formula
from ngl_keras.gp import engine, evolution, screening
from ngl_keras.settings import Settings, build, check, integer_at_least, validate


def _section(name, parts, extra=()):
    """A config section whose keys are the fields of the engine's settings classes `parts` ((class,
    names or None for all)), with their types and checks, plus `extra` fields; every key optional
    here (the classes' defaults apply), the classes' own rules checked when they are built."""
    picked = []
    for cls, names in parts:
        hints = typing.get_type_hints(cls)
        picked += [(f.name, hints[f.name], field(default=None, metadata=f.metadata))
                   for f in fields(cls) if names is None or f.name in names]
    return make_dataclass(name, picked + list(extra), bases=(Settings,), frozen=True, namespace={"__module__": __name__})


GP = _section("GP", ((engine.PrimitiveSet, ("operators", "constant_range", "constant_probability")),
                     (engine.Limits, None), (engine.Rates, None)),
              [("protected_epsilon", float, field(default=None, metadata=check(
                  lambda v: v > 0, "> 0", "{key} must be > 0; got {value!r}.")))])
Screening = _section("Screening", ((screening.ScreeningSettings, None), (evolution.Schedule, ("max_attempts",))))
FITNESS_KINDS = ("train", "probe")


@dataclass(frozen=True)
class Fitness(Settings):
    """A search config's `fitness`: see `fitness.TrainingFitness` and `fitness.ProbeFitness`."""

    kind: str = field(default="train", metadata=check(lambda v: v in FITNESS_KINDS, "one of train, probe",
                                                      "fitness kind must be one of ('train', 'probe'); got {value!r}."))
    datasets: list[str] = None
    model: str = None
    runs: int = field(default=None, metadata=integer_at_least(1))
    epochs: Optional[int] = field(default=None, metadata=integer_at_least(1))
    limit_train: Optional[int] = field(default=None, metadata=integer_at_least(1))
    weights: Optional[str] = None
    compare_with_ce: bool = None
    settings: dict = None
    probe_steps: int = field(default=None, metadata=integer_at_least(1))
    recycle_every: int = field(default=None, metadata=integer_at_least(0))
    compiled_once: bool = True  # a formula's runs reuse one compiled model (gp.compiled_training); false: train_run
    # candidates trained as one program (gp.compiled_training, population-parallel); 1: one at a time
    population_parallel: int = field(default=1, metadata=integer_at_least(1))
    references: list[str] = None

    def check(self):
        if self.kind == "train":
            for key in ("datasets", "model", "runs"):
                if getattr(self, key) is None:
                    raise ValueError(f"fitness: missing key {key!r} for kind 'train'.")
            if not self.datasets:
                raise ValueError("fitness: datasets is empty; give at least one dataset.")
        if self.population_parallel > 1 and not self.compiled_once:
            raise ValueError("fitness: population_parallel > 1 trains candidates on one compiled program; "
                             "it needs compiled_once: true.")


# Seconds a worker may be silent before its candidate is handed to another; at least a few of
# the heartbeats a training worker sends (oracle.HEARTBEAT_S).
MIN_WORKER_TIMEOUT = 10.0


@dataclass(frozen=True)
class Search(Settings):
    """A search config (configs/search/*.yaml over configs/search/defaults.yaml)."""

    experiment: str
    population: int = field(metadata=evolution.Schedule.__dataclass_fields__["population"].metadata)
    generations: int = field(metadata=evolution.Schedule.__dataclass_fields__["generations"].metadata)
    gp: GP
    screening: Screening
    fitness: Fitness
    seed: int = 0
    hall_of_fame: int = field(default=10, metadata=integer_at_least(1))
    worker_timeout: float = field(default=600.0, metadata=check(
        lambda v: v >= MIN_WORKER_TIMEOUT, f">= {MIN_WORKER_TIMEOUT:g}",
        "{where}worker_timeout must be >= %g seconds; got {value!r}." % MIN_WORKER_TIMEOUT))

    @property
    def epsilon(self):
        """The protected operators' epsilon (`gp.protected_epsilon`, else the formula language's)."""
        return formula.EPSILON if self.gp.protected_epsilon is None else self.gp.protected_epsilon

    @property
    def probe(self):
        """Whether the probe fitness scores the candidates (no model is trained)."""
        return self.fitness.kind == "probe"

    def identity(self):
        """What makes two searches the same one: the settings as given, less RUN_SETTINGS (as
        search.json stores them and the chief's hash covers them)."""
        identity = {k: v for k, v in self.to_json().items() if k not in RUN_SETTINGS}
        if isinstance(identity.get("fitness"), dict):
            for key in ("compiled_once", "population_parallel"):  # how candidates train, not what they compute
                identity["fitness"].pop(key, None)
        return identity


EXPERIMENTS = tuple(f"exp{i}{suffix}" for suffix in ("", "_proxy") for i in range(1, 6)) + ("smoke",)
OWN_DATA = "own_data"  # the experiment of the Python API's search (configs/api/search.yaml)
DEFAULTS_FILE = "defaults.yaml"
# Settings that change how a search runs, not what it computes: not part of its identity.
RUN_SETTINGS = ("worker_timeout",)


def load_config(path, overrides=None, defaults=None):
    """The `Search` of the config at `path` (or a mapping), merged over the shared `defaults` file
    (default: the defaults.yaml next to it, if any), with command-line `overrides` (population,
    generations, seed, epochs, limit_train, worker_timeout) applied and every value checked."""
    if isinstance(path, dict):  # the Python API's config (`ngl_keras.gp.search`)
        own, path = copy.deepcopy(path), "search config"
    else:
        path = Path(path)
        own = config_module.read_yaml(path)  # an empty file is refused there
    validate(own, Search, str(path), partial=True)
    defaults = Path(defaults) if defaults else path.parent / DEFAULTS_FILE
    if defaults.exists() and (not isinstance(path, Path) or defaults.resolve() != path.resolve()):
        base = validate(config_module.read_yaml(defaults), Search, str(defaults), partial=True)
        own = config_module.merge(base, own)
    data = own
    for key in ("experiment", "population", "generations", "gp", "screening", "fitness"):
        if key not in data:
            raise ValueError(f"{path}: missing key {key!r}.")
    if data["experiment"] not in EXPERIMENTS + (OWN_DATA,):
        raise ValueError(f"{path}: unknown experiment {data['experiment']!r}; known: {', '.join(EXPERIMENTS)}.")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in ("epochs", "limit_train"):
            data["fitness"][key] = value
        else:
            data[key] = value
    cfg = build(Search, data, str(path))
    engine_parts(cfg)  # rates, limits, operators and evolution settings are checked here
    screening_settings(cfg)
    check_references(cfg.fitness)
    return cfg


def check_references(settings):
    """`fitness.references` (of `Fitness` settings): losses scored with the search's own fitness as
    reference points; registry names or formulas for a training fitness, formulas only for the probe
    fitness. Checked without Keras (`ngl_keras.names`)."""
    from ngl_keras.names import LOSSES, parse_loss

    names = settings.references or []
    if len(set(names)) != len(names):
        raise ValueError(f"fitness references must be unique; got {names}.")
    for name in names:
        _, found, _ = parse_loss(name)  # an unknown name fails here
        if found not in LOSSES:
            formula.parse(name)  # a formula: it must parse
        elif settings.kind == "probe":
            raise ValueError(f"fitness reference {name!r}: the probe fitness scores formulas only; "
                             "give the loss as a formula.")


def _given(section, cls):
    """The fields of engine class `cls` that settings `section` gives (the rest: `cls`'s defaults)."""
    return {f.name: getattr(section, f.name) for f in fields(cls)
            if hasattr(section, f.name) and getattr(section, f.name) is not None}


def engine_parts(cfg):
    """The engine's (PrimitiveSet, Limits, Rates) of `Search` `cfg`."""
    pset = engine.PrimitiveSet(variables=("p", "y"), required=("p", "y"), **_given(cfg.gp, engine.PrimitiveSet))
    return pset, engine.Limits(**_given(cfg.gp, engine.Limits)), engine.Rates(**_given(cfg.gp, engine.Rates))

def screening_settings(cfg):
    """The `screening.ScreeningSettings` of `Search` `cfg`."""
    return screening.ScreeningSettings(**_given(cfg.screening, screening.ScreeningSettings))


def max_attempts(cfg):
    """Proposals per generation before the search stops (`screening.max_attempts`)."""
    given = cfg.screening.max_attempts
    return evolution.Schedule.__dataclass_fields__["max_attempts"].default if given is None else given


def with_later_defaults(saved):
    """A saved search config (search.json's mapping) with the settings added since it was written
    set to what that search ran with: `screening.rules` (all of REASONS before the setting existed)."""
    screen = saved.get("screening")
    if isinstance(screen, dict) and "rules" not in screen:
        return {**saved, "screening": {**screen, "rules": list(screening.REASONS)}}
    return saved
