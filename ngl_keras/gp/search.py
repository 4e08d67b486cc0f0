"""A loss search from a config file to its outputs: build the primitive set, screening,
fitness and evolution, run them under keras-tuner, and write the generation log, the hall of
fame, the best loss and a plot to the search directory."""

import copy
import hashlib
import json
import math
import sys
import types
from dataclasses import fields
from pathlib import Path

from ngl_keras import config as config_module
from ngl_keras.files import append_json_line, atomic_write, read_json_lines, repair_json_lines
from ngl_keras.gp import engine, evolution, fitness as fitness_module, screening
from ngl_keras.gp.evolution import SearchStopped, fitness_text
from ngl_keras.losses import expression


def dataclass_schema(cls, names=None):
    """Config keys and types of the fields of dataclass `cls` (all, or `names`), from their
    defaults: the class that consumes a setting is the one place that says what it is."""
    def expected(default):
        if isinstance(default, bool):
            return bool
        if isinstance(default, (int, float)):
            return type(default)
        if isinstance(default, tuple):
            return [str] if default and isinstance(default[0], str) else [float]
        raise TypeError(f"no config type for the default {default!r} of {cls.__name__}")

    return {f.name: expected(f.default) for f in fields(cls) if names is None or f.name in names}


GP = {"operators": [str], **dataclass_schema(engine.PrimitiveSet, ("constant_range", "constant_probability")),
      **dataclass_schema(engine.Limits), **dataclass_schema(engine.Rates), "protected_epsilon": float}
SCREENING = {**dataclass_schema(screening.ScreeningSettings), "max_attempts": int}
FITNESS = {"kind": str, "datasets": [str], "model": str, "runs": int, "epochs": (int, type(None)),
           "limit_train": (int, type(None)), "weights": (str, type(None)), "compare_with_ce": bool,
           "settings": dict, "probe_steps": int, "recycle_every": int, "references": [str]}
SEARCH = {"experiment": str, "population": int, "generations": int, "seed": int,
          "hall_of_fame": int, "worker_timeout": float, "gp": GP, "screening": SCREENING, "fitness": FITNESS}
# The smallest accepted value of the integer settings no consuming class checks itself.
MINIMUM = {"hall_of_fame": 1, "epochs": 1, "limit_train": 1, "runs": 1, "probe_steps": 1,
           "recycle_every": 0, "fingerprint_digits": 0}
EXPERIMENTS = tuple(f"exp{i}{suffix}" for suffix in ("", "_proxy") for i in range(1, 6)) + ("smoke",)
OWN_DATA = "own_data"  # the experiment of the Python API's search (configs/api/search.yaml)
FITNESS_KINDS = ("train", "probe")
CONFIG_FILE = "search.yaml"
DEFAULTS_FILE = "defaults.yaml"
# Seconds a worker may be silent before its candidate is handed to another; at least a few of
# the heartbeats a training worker sends (oracle.HEARTBEAT_S).
MIN_WORKER_TIMEOUT = 10.0
# Settings that change how a search runs, not what it computes: not part of its identity.
RUN_SETTINGS = ("worker_timeout",)
REFERENCES_FILE = "references.json"


def check_numbers(data, where):
    """Every number finite, and the settings of MINIMUM at or above their minimum."""
    for key, value in data.items():
        if isinstance(value, dict) and key != "settings":
            check_numbers(value, f"{where}: {key}")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where}: {key} must be a finite number; got {value!r}.")
        elif key in MINIMUM and value is not None and value < MINIMUM[key]:
            raise ValueError(f"{where}: {key} must be an integer >= {MINIMUM[key]}; got {value!r}.")


def load_config(path, overrides=None, defaults=None):
    """The search config at `path` (or a mapping), merged over the shared `defaults` file (default:
    the defaults.yaml next to it, if any), with command-line `overrides` (population, generations,
    seed, epochs, limit_train, worker_timeout) applied and every value checked."""
    if isinstance(path, dict):  # the Python API's config (`ngl_keras.gp.search`)
        own, path = copy.deepcopy(path), "search config"
    else:
        path = Path(path)
        own = config_module.read_yaml(path)  # an empty file is refused there
    config_module.validate(own, SEARCH, str(path))
    defaults = Path(defaults) if defaults else path.parent / DEFAULTS_FILE
    if defaults.exists() and (not isinstance(path, Path) or defaults.resolve() != path.resolve()):
        base = config_module.validate(config_module.read_yaml(defaults), SEARCH, str(defaults))
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
    config_module.validate(data, SEARCH, str(path))
    check_numbers(data, str(path))
    kind = data["fitness"].get("kind", "train")
    if kind not in FITNESS_KINDS:
        raise ValueError(f"{path}: fitness kind must be one of {FITNESS_KINDS}; got {kind!r}.")
    if kind == "train":
        for key in ("datasets", "model", "runs"):
            if key not in data["fitness"]:
                raise ValueError(f"{path}: fitness: missing key {key!r} for kind 'train'.")
        if not data["fitness"]["datasets"]:
            raise ValueError(f"{path}: fitness: datasets is empty; give at least one dataset.")
    timeout = data.get("worker_timeout", 600.0)
    if not timeout >= MIN_WORKER_TIMEOUT:
        raise ValueError(f"{path}: worker_timeout must be >= {MIN_WORKER_TIMEOUT:g} seconds; got {timeout!r}.")
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
    evolution.check_settings(cfg["population"], cfg["generations"], cfg["screening"].get("max_attempts", 1000))
    epsilon = gp.get("protected_epsilon", expression.EPSILON)
    if not epsilon > 0:
        raise ValueError(f"protected_epsilon must be > 0; got {epsilon!r}.")
    return pset, limits, rates


def screening_settings(cfg):
    s = cfg["screening"]
    if "allowed_range" in s:
        engine.check_range("allowed_range", s["allowed_range"])
    if not s.get("improvement_rate", 1.0) > 0:
        raise ValueError(f"improvement_rate must be > 0; got {s['improvement_rate']!r}.")
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
        figure.savefig(self.path / "fitness.png", dpi=90)
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
