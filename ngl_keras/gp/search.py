"""A loss search from a config file to its outputs: build the primitive set, screening,
fitness and evolution, run them under keras-tuner, and write the generation log, the hall of
fame, the best loss and a plot to the search directory."""

import json
from dataclasses import fields
from pathlib import Path

from ngl_keras import config as config_module
from ngl_keras.gp import engine, evolution, fitness as fitness_module, screening
from ngl_keras.files import append_json_line, atomic_write
from ngl_keras.gp.oracle import GPOracle, GPTuner
from ngl_keras.losses import expression

GP = {"operators": [str], "constant_range": [float], "constant_probability": float,
      "min_height": int, "max_size": int, "init_max_height": int, "mutation_max_height": int,
      "crossover": float, "subtree_mutation": float, "point_mutation": float,
      "archive_use": float, "archive_save": float, "tournament_size": int,
      "protected_epsilon": float}
SCREENING = {"allowed_range": [float], "probe_batch": int, "probe_classes": int,
             "improvement_steps": int, "max_attempts": int}
FITNESS = {"kind": str, "datasets": [str], "model": str, "runs": int, "epochs": (int, type(None)),
           "limit_train": (int, type(None)), "weights": (str, type(None)), "compare_with_ce": bool,
           "settings": dict, "probe_steps": int, "recycle_every": int, "references": [str]}
SEARCH = {"experiment": str, "population": int, "generations": int, "seed": int,
          "hall_of_fame": int, "gp": GP, "screening": SCREENING, "fitness": FITNESS}
EXPERIMENTS = tuple(f"exp{i}{suffix}" for suffix in ("", "_proxy") for i in range(1, 6)) + ("smoke",)
FITNESS_KINDS = ("train", "probe")
CONFIG_FILE = "search.yaml"
REFERENCES_FILE = "references.json"


def load_config(path, overrides=None):
    """The search config at `path` with command-line `overrides` (population, generations,
    seed, epochs, limit_train) applied and every value checked."""
    data = config_module.validate(config_module.read_yaml(path), SEARCH, str(path))
    for key in ("experiment", "population", "generations", "gp", "screening", "fitness"):
        if key not in data:
            raise ValueError(f"{path}: missing key {key!r}.")
    if data["experiment"] not in EXPERIMENTS:
        raise ValueError(f"{path}: unknown experiment {data['experiment']!r}; known: {', '.join(EXPERIMENTS)}.")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key in ("epochs", "limit_train"):
            data["fitness"][key] = value
        else:
            data[key] = value
    if data["fitness"].get("kind", "train") not in FITNESS_KINDS:
        raise ValueError(f"{path}: fitness kind must be one of {FITNESS_KINDS}; got {data['fitness']['kind']!r}.")
    build_engine_parts(data)  # rates, limits and operators are checked here
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
    for key in ("population", "generations"):
        if not isinstance(cfg[key], int) or cfg[key] < (2 if key == "population" else 0):
            raise ValueError(f"{key} must be an integer >= {2 if key == 'population' else 0}; got {cfg[key]!r}.")
    return pset, limits, rates


class SearchDirectory:
    """What a search writes, and the checks that a directory holds this search."""

    def __init__(self, path):
        self.path = Path(path)

    def claim(self, cfg, write):
        """Make or resume the search directory for `cfg`; refuse a foreign or corrupt one."""
        saved = self.path / CONFIG_FILE
        if saved.exists():
            try:
                previous = json.loads(saved.read_text())
            except json.JSONDecodeError:
                raise ValueError(f"search directory {self.path} is corrupt: {CONFIG_FILE} is unreadable.") from None
            if previous != cfg:
                differing = sorted(k for k in set(previous) | set(cfg) if previous.get(k) != cfg.get(k))
                raise ValueError(f"search directory {self.path} holds a different search (settings that "
                                 f"differ: {', '.join(differing)}); resume it with the same settings or use a new --out.")
        elif self.path.exists() and any(self.path.iterdir()):
            raise ValueError(f"{self.path} is not empty and holds no search ({CONFIG_FILE} is missing); "
                             "use a new --out.")
        elif write:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write(saved, json.dumps(cfg, sort_keys=True))

    def log_generation(self, summary):
        path = self.path / "generations.jsonl"
        done = {json.loads(line)["generation"] for line in path.read_text().splitlines() if line.strip()} \
            if path.exists() else set()
        if summary["generation"] in done:  # re-done after a crash between log and checkpoint
            return
        append_json_line(path, summary)

    def generations(self):
        path = self.path / "generations.jsonl"
        if not path.exists():
            return []
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash; the generation is logged again on resume
        return out

    def write_results(self, evo, cfg):
        k = cfg.get("hall_of_fame", 10)
        epsilon = cfg["gp"].get("protected_epsilon", expression.EPSILON)
        fame = []
        for rank, ind in enumerate(evo.hall_of_fame(k), 1):
            tree = ind["tree"]
            fame.append({"rank": rank, "formula": ind["text"],
                         "display": expression.to_text(expression.fold_constants(tree, epsilon), digits=4),
                         "latex": expression.to_latex(expression.fold_constants(tree, epsilon)),
                         "fitness": ind["fitness"], "experiment": cfg["experiment"]})
        atomic_write(self.path / "hall_of_fame.json", json.dumps(fame, indent=2))
        if fame:
            atomic_write(self.path / "best_loss.txt", best_loss_line(fame[0]["formula"], epsilon) + "\n")
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
            log(f"reference {name}: fitness {value}")
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
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        axis.set_ylabel("fitness (first component, lower is better)")
        axis.legend()
        figure.tight_layout()
        figure.savefig(self.path / "fitness.png", dpi=90)
        plt.close(figure)


def best_loss_line(formula, epsilon):
    if epsilon == expression.EPSILON:
        return f'ExpressionLoss("{formula}")'
    return f'ExpressionLoss("{formula}", epsilon={epsilon!r})'


def build_fitness(cfg, screen, search_dir, configs_dir, data_dir=None):
    settings = cfg["fitness"]
    if settings.get("kind", "train") == "probe":
        return fitness_module.ProbeFitness(screen, settings.get("probe_steps", 40))
    for key in ("datasets", "model", "runs"):
        if key not in settings:
            raise ValueError(f"fitness: missing key {key!r} for kind 'train'.")
    return fitness_module.TrainingFitness(settings, configs_dir, search_dir, data_dir, cfg.get("seed", 0))


def run(cfg, search_dir, configs_dir, data_dir=None, log=print):
    """Run (or resume) the search of `cfg` in `search_dir`; return the Evolution when this
    process is the chief or runs alone (a worker returns None when the search ends)."""
    from keras_tuner.src.distribute import utils as dist_utils

    worker = dist_utils.has_chief_oracle() and not dist_utils.is_chief_oracle()
    directory = SearchDirectory(search_dir)
    directory.claim(cfg, write=not worker)
    pset, limits, rates = build_engine_parts(cfg)
    s = cfg["screening"]
    screen = screening.LossScreen(
        screening.ScreeningSettings(**{k: (tuple(v) if isinstance(v, list) else v)
                                       for k, v in s.items() if k != "max_attempts"}),
        epsilon=cfg["gp"].get("protected_epsilon", expression.EPSILON))

    def on_generation(summary):
        if references:
            summary = {**summary, "references": references}
        directory.log_generation(summary)
        log(format_generation(summary))
        directory.write_results(evo, cfg)

    evo = evolution.Evolution(pset, limits, rates, cfg["population"], cfg["generations"],
                              seed=cfg.get("seed", 0), screen=screen,
                              max_attempts=s.get("max_attempts", 1000),
                              on_generation=None if worker else on_generation)
    fitness = build_fitness(cfg, screen, Path(search_dir), configs_dir, data_dir)
    references = {}
    if not worker and not evo.finished:
        references = directory.references(cfg["fitness"].get("references", []), fitness, log)
    size = 2 if cfg["fitness"].get("compare_with_ce") else 1
    oracle = GPOracle(evo, fitness_size=size, seed=cfg.get("seed", 0))
    try:
        tuner = GPTuner(oracle, fitness, str(search_dir))
    except (json.JSONDecodeError, KeyError, RuntimeError) as error:
        raise ValueError(f"search directory {search_dir} is corrupt: its keras-tuner state cannot be "
                         f"read ({type(error).__name__}).") from None
    try:
        if evo.finished:
            log("the search in this directory is complete.")
        else:
            tuner.search()
    finally:
        getattr(fitness, "close", lambda: None)()
    if worker:
        return None
    directory.write_results(evo, cfg)
    return evo


def format_generation(g):
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(g["rejected"].items())) or "none"
    fitness = lambda f: "(" + ", ".join(f"{v:.4g}" for v in f) + ")"  # noqa: E731
    return (f"generation {g['generation']}: best {fitness(g['best_fitness'])}, median "
            f"{fitness(g['median_fitness'])}; proposed {g['proposed']}, rejected [{rejected}], cache hits "
            f"{g['cache_hits']}, trained {g['trained']}; {g['wall_time_s']:.1f} s, peak RSS "
            f"{g['peak_rss_mb']:.0f} MB; best {g['best_formula']}"
            + "".join(f"; {name} {fitness(value)}" for name, value in g.get("references", {}).items()))


def report(search_dir):
    """The generation log, hall of fame and best loss of a search directory, as text."""
    directory = SearchDirectory(search_dir)
    if not (directory.path / CONFIG_FILE).exists():
        raise ValueError(f"{search_dir} holds no search ({CONFIG_FILE} is missing).")
    lines = [format_generation(g) for g in directory.generations()]
    fame_path = directory.path / "hall_of_fame.json"
    if fame_path.exists():
        lines.append("\nhall of fame:")
        for entry in json.loads(fame_path.read_text()):
            lines.append(f"  {entry['rank']:>2}. fitness {entry['fitness']}  {entry['display']}")
            lines.append(f"      LaTeX: {entry['latex']}")
    best = directory.path / "best_loss.txt"
    if best.exists():
        lines.append("\nbest loss: " + best.read_text().strip())
    return "\n".join(lines)
