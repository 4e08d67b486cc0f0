"""A loss search from a config file to its outputs: build the primitive set, screening,
fitness and evolution, run them under keras-tuner, and write the generation log, the hall of
fame, the best loss and a plot to the search directory."""

import copy
import hashlib
import json
import sys
import types
import typing
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Optional

from ngl_keras import config as config_module
from ngl_keras.files import append_json_line, atomic_savefig, atomic_write, read_json_lines, repair_json_lines
from ngl_keras.gp import engine, evolution, fitness as fitness_module, screening
from ngl_keras.gp.evolution import SearchStopped, fitness_text
from ngl_keras.losses import expression
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
    return make_dataclass(name, picked + list(extra), bases=(Settings,), frozen=True)


def _at_least(least):
    return integer_at_least(least)


GP = _section("GP", ((engine.PrimitiveSet, ("operators", "constant_range", "constant_probability")),
                     (engine.Limits, None), (engine.Rates, None)),
              [("protected_epsilon", float, field(default=None, metadata=check(
                  lambda v: v > 0, "> 0", "{key} must be > 0; got {value!r}.")))])
SCREENING = _section("Screening", ((screening.ScreeningSettings, None), (evolution.Schedule, ("max_attempts",))))
FITNESS_KINDS = ("train", "probe")


@dataclass(frozen=True)
class Fitness(Settings):
    """A search config's `fitness`: see `fitness.TrainingFitness` and `fitness.ProbeFitness`."""

    kind: str = field(default="train", metadata=check(lambda v: v in FITNESS_KINDS, "one of train, probe",
                                                      "fitness kind must be one of ('train', 'probe'); got {value!r}."))
    datasets: list[str] = None
    model: str = None
    runs: int = field(default=None, metadata=_at_least(1))
    epochs: Optional[int] = field(default=None, metadata=_at_least(1))
    limit_train: Optional[int] = field(default=None, metadata=_at_least(1))
    weights: Optional[str] = None
    compare_with_ce: bool = None
    settings: dict = None
    probe_steps: int = field(default=None, metadata=_at_least(1))
    recycle_every: int = field(default=None, metadata=_at_least(0))
    references: list[str] = None

    def check(self):
        if self.kind == "train":
            for key in ("datasets", "model", "runs"):
                if getattr(self, key) is None:
                    raise ValueError(f"fitness: missing key {key!r} for kind 'train'.")
            if not self.datasets:
                raise ValueError("fitness: datasets is empty; give at least one dataset.")


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
    screening: SCREENING
    fitness: Fitness
    seed: int = 0
    hall_of_fame: int = field(default=10, metadata=_at_least(1))
    worker_timeout: float = field(default=600.0, metadata=check(
        lambda v: v >= MIN_WORKER_TIMEOUT, f">= {MIN_WORKER_TIMEOUT:g}",
        "{where}worker_timeout must be >= %g seconds; got {value!r}." % MIN_WORKER_TIMEOUT))


EXPERIMENTS = tuple(f"exp{i}{suffix}" for suffix in ("", "_proxy") for i in range(1, 6)) + ("smoke",)
OWN_DATA = "own_data"  # the experiment of the Python API's search (configs/api/search.yaml)
CONFIG_FILE = "search.yaml"
DEFAULTS_FILE = "defaults.yaml"
# Settings that change how a search runs, not what it computes: not part of its identity.
RUN_SETTINGS = ("worker_timeout",)
REFERENCES_FILE = "references.json"


def load_config(path, overrides=None, defaults=None):
    """The search config at `path` (or a mapping), merged over the shared `defaults` file (default:
    the defaults.yaml next to it, if any), with command-line `overrides` (population, generations,
    seed, epochs, limit_train, worker_timeout) applied and every value checked."""
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
    build(Search, data, str(path))
    build_engine_parts(data)  # rates, limits, operators and evolution settings are checked here
    screening_settings(data)
    check_references(data)
    return data


def check_references(cfg):
    """`fitness.references`: losses scored with the search's own fitness as reference points;
    registry names or formulas for a training fitness, formulas only for the probe fitness."""
    from ngl_keras import losses

    settings = cfg["fitness"]
    names = settings.get("references", [])
    if len(set(names)) != len(names):
        raise ValueError(f"fitness references must be unique; got {names}.")
    for name in names:
        losses.entry(name)  # an unknown name fails here
        if name.strip().lower() not in losses.REGISTRY:
            expression.parse(name)  # a formula: it must parse
        elif settings.get("kind", "train") == "probe":
            raise ValueError(f"fitness reference {name!r}: the probe fitness scores formulas only; "
                             "give the loss as a formula.")


def build_engine_parts(cfg):
    gp = cfg["gp"]
    pset = engine.PrimitiveSet(tuple(gp["operators"]), ("p", "y"),
                               tuple(gp.get("constant_range", (-5.0, 5.0))), ("p", "y"),
                               gp.get("constant_probability", 0.3))
    limits = engine.Limits(**{f.name: gp[f.name] for f in fields(engine.Limits) if f.name in gp})
    rates = engine.Rates(**{f.name: gp[f.name] for f in fields(engine.Rates) if f.name in gp})
    return pset, limits, rates


def screening_settings(cfg):
    s = cfg["screening"]
    return screening.ScreeningSettings(**{k: (tuple(v) if isinstance(v, list) else v)
                                          for k, v in s.items() if k != "max_attempts"})


GENERATION_KEYS = ("generation", "best_fitness", "median_fitness", "best_formula", "proposed",
                   "rejected", "cache_hits", "trained", "wall_time_s", "peak_rss_mb")


def with_later_defaults(saved):
    """A saved search config with the settings added since it was written set to what that search ran
    with: `screening.rules` (all of REASONS before the setting existed)."""
    screen = saved.get("screening")
    if isinstance(screen, dict) and "rules" not in screen:
        return {**saved, "screening": {**screen, "rules": list(screening.REASONS)}}
    return saved


class SearchDirectory:
    """What a search writes, and the checks that a directory holds this search."""

    def __init__(self, path):
        self.path = Path(path)

    def saved_config(self):
        """The settings of the search held here, or None when there is none yet."""
        saved = self.path / CONFIG_FILE
        if not saved.exists():
            return None
        try:
            return json.loads(saved.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"search directory {self.path} is corrupt: {CONFIG_FILE} is unreadable.") from None

    def claim(self, cfg, write):
        """Make or resume the search directory for `cfg`; refuse a foreign or corrupt one."""
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"--out {self.path} is a file, not a directory; give a directory for the search.")
        previous = self.saved_config()
        if previous is not None:
            previous = with_later_defaults(previous)
            if previous != cfg:
                differing = sorted(k for k in set(previous) | set(cfg) if previous.get(k) != cfg.get(k))
                raise ValueError(f"search directory {self.path} holds a different search (settings that "
                                 f"differ: {', '.join(differing)}); resume it with the same settings or use a new --out.")
        elif self.path.exists() and any(self.path.iterdir()):
            raise ValueError(f"{self.path} is not empty and holds no search ({CONFIG_FILE} is missing); "
                             "use a new --out.")
        if not write:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if previous is None:
                atomic_write(self.path / CONFIG_FILE, json.dumps(cfg, sort_keys=True))
            for name in ("generations.jsonl", "evaluations.jsonl"):
                repair_json_lines(self.path / name)  # a line cut by a crash, before the next append
            probe = self.path / ".writable"
            atomic_write(probe, "")
            probe.unlink()
        except OSError as error:
            raise ValueError(f"cannot write the search directory {self.path}: {error.strerror or error}.") from None

    def log_generation(self, summary):
        path = self.path / "generations.jsonl"
        if any(g.get("generation") == summary["generation"] for g in read_json_lines(path)):
            return  # re-done after a crash between log and checkpoint
        append_json_line(path, summary)

    def generations(self):
        """The generation log; a line cut by a crash at its end is skipped (it is logged again
        on resume), a line without the keys of a generation summary is named."""
        path = self.path / "generations.jsonl"
        out = read_json_lines(path)
        for number, record in enumerate(out, 1):
            missing = [k for k in GENERATION_KEYS if k not in record] if isinstance(record, dict) else GENERATION_KEYS
            if missing:
                raise ValueError(f"{path}: record {number} is not a generation summary (missing "
                                 f"{', '.join(missing)}).")
        return out

    def write_results(self, evo, cfg):
        k = cfg.get("hall_of_fame", 10)
        epsilon = cfg["gp"].get("protected_epsilon", expression.EPSILON)
        fame, best = [], evo.hall_of_fame(k)
        for rank, ind in enumerate(best, 1):
            tree = ind["tree"]
            fame.append({"rank": rank, "formula": ind["text"],
                         "display": expression.to_text(expression.fold_constants(tree, epsilon), digits=4),
                         "latex": expression.to_latex(expression.fold_constants(tree, epsilon)),
                         "fitness": ind["fitness"], "experiment": cfg["experiment"]})
        atomic_write(self.path / "hall_of_fame.json", json.dumps(fame, indent=2))
        if fame:  # folded as the hall of fame shows it, the constants exact
            folded = expression.to_text(expression.fold_constants(best[0]["tree"], epsilon))
            atomic_write(self.path / "best_loss.txt", best_loss_line(folded, epsilon) + "\n")
        self.plot(self.generations())

    def references(self, names, fitness, log=print):
        """{name: fitness} of the reference losses, each scored once by `fitness` and kept in
        references.json (written after each one, so that a resume scores only the missing)."""
        path = self.path / REFERENCES_FILE
        scored = json.loads(path.read_text()) if path.exists() else {}
        for name in names:
            if name in scored:
                continue
            log(f"reference {name}: scoring with the search's fitness")
            value = [float(v) for v in fitness(name)]
            log(f"reference {name}: fitness {fitness_text(value)}")
            if all(v < evolution.WORST for v in value):  # a failed training is tried again on resume
                scored[name] = value
                atomic_write(path, json.dumps(scored, indent=2))
            else:
                log(f"reference {name} failed; it is not kept and is scored again on resume")
        return {name: scored[name] for name in names if name in scored}

    def plot(self, generations):
        if not generations:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker

        figure, axis = plt.subplots(figsize=(6, 3.5))
        xs = [g["generation"] for g in generations]
        axis.plot(xs, [g["best_fitness"][0] for g in generations], marker="o", label="best")
        axis.plot(xs, [g["median_fitness"][0] for g in generations], marker="s", label="median")
        references = generations[-1].get("references", {})
        for (name, value), style in zip(references.items(), ("--", ":", "-.", (0, (5, 1)))):
            axis.axhline(value[0], linestyle=style, color="0.3", label=f"{name} (reference)")
        axis.set_xlabel("generation")
        # whole generations, even when there is only one
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, min_n_ticks=1))
        axis.set_ylabel("fitness (first component, lower is better)")
        axis.legend()
        figure.tight_layout()
        atomic_savefig(figure, self.path / "fitness.png", dpi=90)
        plt.close(figure)


def best_loss_line(formula, epsilon):
    if epsilon == expression.EPSILON:
        return f'ExpressionLoss("{formula}")'
    return f'ExpressionLoss("{formula}", epsilon={epsilon!r})'


def build_fitness(cfg, screen, search_dir, configs_dir, data_dir=None, sources=None):
    settings = cfg["fitness"]
    if settings.get("kind", "train") == "probe":
        return fitness_module.ProbeFitness(screen, settings.get("probe_steps", 40))
    for key in ("datasets", "model", "runs"):
        if key not in settings:
            raise ValueError(f"fitness: missing key {key!r} for kind 'train'.")
    settings = {k: v for k, v in settings.items() if k != SOURCES_KEY}
    return fitness_module.TrainingFitness(settings, configs_dir, search_dir, data_dir, cfg.get("seed", 0), sources)


# The Python API's search names its in-memory data and model function in `fitness` under this key
# (their content and config hashes), so that a directory is resumed only with the same ones.
SOURCES_KEY = "sources"


def run(cfg, search_dir, configs_dir, data_dir=None, log=print, sources=None):
    """Run (or resume) the search of `cfg` in `search_dir`; return the Evolution when this
    process is the chief or runs alone (a worker returns None when the search ends).
    `sources` (a `training.Sources`): in-memory arrays and model functions the fitness names.

    Raises SearchStopped when the search cannot go on (a generation where nothing could be
    evaluated, an error while evaluating a candidate, no chief): the state is kept, and
    re-running the same command resumes.
    """
    from ngl_keras.gp import oracle as oracle_module

    worker = oracle_module.role() == "worker"
    identity = {k: v for k, v in cfg.items() if k not in RUN_SETTINGS}
    worker_timeout = float(cfg.get("worker_timeout", 600.0))
    directory = SearchDirectory(search_dir)
    pset, limits, rates = build_engine_parts(cfg)
    s = cfg["screening"]
    screen = screening.LossScreen(screening_settings(cfg),
                                  epsilon=cfg["gp"].get("protected_epsilon", expression.EPSILON))
    # Data, model and training settings are checked before anything is written.
    fitness = build_fitness(cfg, screen, Path(search_dir), configs_dir, data_dir, sources)
    try:
        getattr(fitness, "check_inputs", lambda: None)()
        resuming = directory.saved_config() is not None
        if not worker:  # a worker waits for the chief (GPTuner) and writes nothing before
            directory.claim(identity, write=True)

        references = {}  # CE's and NGL's fitness under the same fitness, logged with every generation

        def on_generation(summary):
            if references:
                summary = {**summary, "references": references}
            directory.log_generation(summary)
            log(format_generation(summary, probe=cfg["fitness"].get("kind") == "probe"))
            directory.write_results(evo, cfg)

        evo = evolution.Evolution(pset, limits, rates, cfg["population"], cfg["generations"],
                                  seed=cfg.get("seed", 0), screen=screen,
                                  max_attempts=s.get("max_attempts", 1000),
                                  on_generation=None if worker else on_generation)
        if not worker and not evo.finished:
            references.update(directory.references(cfg["fitness"].get("references", []), fitness, log))
        size = 2 if cfg["fitness"].get("compare_with_ce") else 1
        search_id = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        oracle = oracle_module.GPOracle(evo, fitness_size=size, seed=cfg.get("seed", 0),
                                        worker_timeout=worker_timeout, log=log, search_id=search_id)
        try:
            tuner = oracle_module.GPTuner(oracle, fitness, str(search_dir), log=log)
        except (json.JSONDecodeError, KeyError, RuntimeError) as error:
            raise ValueError(f"search directory {search_dir} is corrupt: its keras-tuner state cannot be "
                             f"read ({type(error).__name__}).") from None
        if evo.finished:
            log("the search in this directory is complete.")
        else:
            if resuming and not worker:  # the state is loaded now (GPTuner reloads it)
                evaluated = len(read_json_lines(directory.path / "evaluations.jsonl"))
                log(f"resuming the search in {search_dir}: generation {evo.generation} of {cfg['generations']}, "
                    f"{evaluated} candidates evaluated so far")
            try:
                with oracle_module.INTERRUPTS:
                    tuner.search()
            except oracle_module.CandidateError as error:
                raise SearchStopped(f"{error} (traceback in {directory.path / oracle_module.ERROR_FILE}); the "
                                    "search state is kept: fix the cause and re-run the same command to resume.") from None
    finally:
        getattr(fitness, "close", lambda: None)()
    if worker:
        return None
    stopped = oracle.fatal or evo.stopped
    if stopped:
        raise SearchStopped(stopped)
    directory.write_results(evo, cfg)
    return evo


def _display(formula):
    """A formula as the hall of fame shows it: constants folded, 4 digits."""
    return expression.to_text(expression.fold_constants(expression.parse(formula)), digits=4)


def format_generation(g, probe=False):
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(g["rejected"].items())) or "none"
    failed = ", ".join(f"{k} {v}" for k, v in sorted(g.get("failed", {}).items())) or "none"
    evaluated = "scored by the probe" if probe else "trained"
    return (f"generation {g['generation']}: best {fitness_text(g['best_fitness'])}, median "
            f"{fitness_text(g['median_fitness'])}; proposed {g['proposed']}, rejected [{rejected}], cache hits "
            f"{g['cache_hits']}, {evaluated} {g['trained']}, failed [{failed}]; {g['wall_time_s']:.1f} s, peak RSS "
            f"{g['peak_rss_mb']:.0f} MB; best {_display(g['best_formula'])}"
            + "".join(f"; {name} {fitness_text(value)}" for name, value in g.get("references", {}).items()))


PROBE_NOTE = ("probe fitness: 1 - the true-class probability reached by gradient descent on the screening "
              "batch; no model was trained, so these numbers rank candidates, they are no accuracy")


def report(search_dir, generations=True):
    """The generation log (unless `generations` is False: the search printed it as it ran), hall
    of fame and best loss of a search directory, as text."""
    directory = SearchDirectory(search_dir)
    if not directory.path.is_dir() or not (directory.path / CONFIG_FILE).exists():
        raise ValueError(f"{search_dir} holds no search ({CONFIG_FILE} is missing).")
    saved = directory.saved_config() or {}
    probe = isinstance(saved.get("fitness"), dict) and saved["fitness"].get("kind") == "probe"
    lines = [format_generation(g, probe) for g in directory.generations()] if generations else []
    fame_path = directory.path / "hall_of_fame.json"
    if fame_path.exists():
        lines.append("\nhall of fame" + (f" ({PROBE_NOTE}):" if probe else ":"))
        try:
            fame = json.loads(fame_path.read_text())
            entries = [(e["rank"], e["fitness"], e["display"], e["latex"]) for e in fame]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{fame_path} is corrupt; re-running the search rewrites it.") from None
        for rank, fitness, display, latex in entries:
            lines.append(f"  {rank:>2}. {'probe ' if probe else ''}fitness {fitness_text(fitness)}  {display}")
            lines.append(f"      LaTeX: {latex}")
    best = directory.path / "best_loss.txt"
    if best.exists():
        lines.append(("\nbest loss by the probe (untrained; train it to judge it): " if probe else "\nbest loss: ")
                     + best.read_text().strip())
    return "\n".join(lines).lstrip("\n")


class _CallableModule(types.ModuleType):
    """`ngl_keras.gp.search` is this module (search_gp.py's) and, called, the Python API's search
    of a loss for your own arrays and model (`ngl_keras.own_data.search`, which runs `run` above):
    Python binds a package's attribute to its submodule of that name on import, so a function of
    that name in `ngl_keras.gp` would be replaced by this module as soon as anything imports it."""

    def __call__(self, model_fn, train, validation, **kwargs):
        from ngl_keras import own_data

        return own_data.search(model_fn, train, validation, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
