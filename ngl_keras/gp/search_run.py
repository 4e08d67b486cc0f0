"""A loss search run: build the screening, fitness and evolution of a `Search`, run them under
keras-tuner (alone, or as the chief or a worker), and say what happened (a line per generation,
the report of a search directory)."""

import hashlib
import json
from pathlib import Path

from ngl_keras import formula
from ngl_keras.files import read_json_lines
from ngl_keras.gp import evolution, screening
from ngl_keras.gp.fitness import ProbeFitness, TrainingFitness
from ngl_keras.gp.evolution import SearchStopped, fitness_text
from ngl_keras.gp.search_directory import CONFIG_FILE, SearchDirectory
from ngl_keras.gp.search_settings import engine_parts, max_attempts, screening_settings


def build_fitness(cfg, screen, search_dir, configs_dir, data_dir=None, sources=None):
    """The fitness of `Search` `cfg`: the probe's on `screen`, or trainings written under `search_dir`."""
    if cfg.probe:
        steps = cfg.fitness.probe_steps
        return ProbeFitness(screen) if steps is None else ProbeFitness(screen, steps)
    return TrainingFitness(cfg.fitness, configs_dir, search_dir, data_dir, cfg.seed, sources)


def run(cfg, search_dir, configs_dir, data_dir=None, log=print, sources=None):
    """Run (or resume) the search of `cfg` (a `Search`) in `search_dir`; return the Evolution when this
    process is the chief or runs alone (a worker returns None when the search ends).
    `sources` (a `grid.Sources`): in-memory arrays and model functions the fitness names.

    Raises SearchStopped when the search cannot go on (a generation where nothing could be
    evaluated, an error while evaluating a candidate, no chief): the state is kept, and
    re-running the same command resumes.
    """
    from ngl_keras.gp import oracle as oracle_module

    worker = oracle_module.role() == "worker"
    identity = cfg.identity()
    directory = SearchDirectory(search_dir)
    pset, limits, rates = engine_parts(cfg)
    screen = screening.LossScreen(screening_settings(cfg), epsilon=cfg.epsilon)
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
            log(format_generation(summary, probe=cfg.probe))
            directory.write_results(evo, cfg)

        evo = evolution.Evolution(pset, limits, rates, cfg.population, cfg.generations,
                                  seed=cfg.seed, screen=screen, max_attempts=max_attempts(cfg),
                                  on_generation=None if worker else on_generation)
        if not worker and not evo.finished:
            references.update(directory.references(cfg.fitness.references or [], fitness, log))
        size = 2 if cfg.fitness.compare_with_ce else 1
        search_id = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        population = 1 if cfg.probe else min(cfg.fitness.population_parallel, cfg.population)  # per trial
        oracle = oracle_module.GPOracle(evo, fitness_size=size, seed=cfg.seed,
                                        worker_timeout=float(cfg.worker_timeout), log=log, search_id=search_id,
                                        population=population)
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
                log(f"resuming the search in {search_dir}: generation {evo.generation} of {cfg.generations}, "
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


def _display(text):
    """Formula `text` as the hall of fame shows it: constants folded, 4 digits."""
    return formula.to_text(formula.fold_constants(formula.parse(text)), digits=4)


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


# The probe saturates: its best formula tests the search machinery (proposal, screening, ranking,
# resume) and can train to chance (10 % on Fashion-MNIST), so it is never printed as a loss to paste.
PROBE_BEST = ("\nthe probe's best formula: {formula}\n"
              "  a test of the search machinery, not a loss to use: the probe trains no model, and its best "
              "formula may train no better than chance. To find a loss, search with a training fitness "
              "(--experiment exp2_proxy).")


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
    best = directory.path / ("probe_best_formula.txt" if probe else "best_loss.txt")
    if best.exists() and probe:  # never as a loss to paste: it may train to chance
        lines.append(PROBE_BEST.format(formula=entries[0][2] if fame_path.exists() and entries else "none"))
    elif best.exists():
        lines.append("\nbest loss: " + best.read_text().strip())
    return "\n".join(lines).lstrip("\n")
