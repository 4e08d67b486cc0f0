"""The search directory: what a search writes (its settings, the generation log, the hall of fame,
the best loss, the reference losses' fitness and a plot), and the checks that a directory holds
this search, so that running the same command again resumes it."""

import json
from pathlib import Path

from ngl_keras import formula
from ngl_keras.files import append_json_line, atomic_savefig, atomic_write, read_json_lines, repair_json_lines
from ngl_keras.gp import evolution
from ngl_keras.gp.evolution import fitness_text
from ngl_keras.gp.search_settings import with_later_defaults

CONFIG_FILE = "search.yaml"
REFERENCES_FILE = "references.json"

GENERATION_KEYS = ("generation", "best_fitness", "median_fitness", "best_formula", "proposed",
                   "rejected", "cache_hits", "trained", "wall_time_s", "peak_rss_mb")


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

    def claim(self, identity, write):
        """Make or resume the search directory for the search of `identity` (`Search.identity()`);
        refuse a foreign or corrupt one."""
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"--out {self.path} is a file, not a directory; give a directory for the search.")
        previous = self.saved_config()
        if previous is not None:
            previous = with_later_defaults(previous)
            if previous != identity:
                differing = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
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
                atomic_write(self.path / CONFIG_FILE, json.dumps(identity, sort_keys=True))
            for name in ("generations.jsonl", "evaluations.jsonl"):
                repair_json_lines(self.path / name)  # a line cut by a crash, before the next append
            probe = self.path / ".writable"
            atomic_write(probe, "")
            probe.unlink()
        except OSError as error:
            raise ValueError(f"cannot write the search directory {self.path}: {error.strerror or error}.") from None

    def log_generation(self, summary):
        """Append a generation's summary with the versions of the code and libraries that ran it."""
        from ngl_keras.records import versions

        path = self.path / "generations.jsonl"
        if any(g.get("generation") == summary["generation"] for g in read_json_lines(path)):
            return  # re-done after a crash between log and checkpoint
        append_json_line(path, {**summary, "versions": versions()})

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
        """The hall of fame (`cfg.hall_of_fame` best of `evo`, `Search` `cfg`), the best loss and the plot."""
        epsilon = cfg.epsilon
        fame, best = [], evo.hall_of_fame(cfg.hall_of_fame)
        for rank, ind in enumerate(best, 1):
            tree = ind["tree"]
            fame.append({"rank": rank, "formula": ind["text"],
                         "display": formula.to_text(formula.fold_constants(tree, epsilon), digits=4),
                         "latex": formula.to_latex(formula.fold_constants(tree, epsilon)),
                         "fitness": ind["fitness"], "experiment": cfg.experiment})
        atomic_write(self.path / "hall_of_fame.json", json.dumps(fame, indent=2))
        if fame:  # folded as the hall of fame shows it, the constants exact
            folded = formula.to_text(formula.fold_constants(best[0]["tree"], epsilon))
            if cfg.probe:  # never a loss to paste: the probe's best may train to chance
                atomic_write(self.path / PROBE_BEST_FILE, PROBE_BEST_HEADER + folded + "\n")
            else:
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

        figure, axis = plt.subplots(figsize=(7.5, 3.5))
        xs = [g["generation"] for g in generations]
        axis.plot(xs, [g["best_fitness"][0] for g in generations], marker="o", label="best")
        axis.plot(xs, [g["median_fitness"][0] for g in generations], marker="s", label="median")
        references = generations[-1].get("references", {})
        for (name, value), style in zip(references.items(), ("--", ":", "-.", (0, (5, 1)))):
            axis.axhline(value[0], linestyle=style, color="0.3", label=f"{name} (reference)")
        axis.set_xlabel("generation")
        # whole generations, even when there is only one
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, min_n_ticks=1))
        axis.set_ylabel("fitness (lower is better)")
        if len(generations[-1]["best_fitness"]) > 1:
            axis.set_title("first component of the fitness", fontsize="medium")
        # beside the axes, not over them: the legend hides no reference line and no point
        axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
        figure.tight_layout()
        atomic_savefig(figure, self.path / "fitness.png", dpi=90)


PROBE_BEST_FILE = "probe_best_formula.txt"  # a probe search's best formula, in place of best_loss.txt
PROBE_BEST_HEADER = ("# The probe fitness's best formula: a test of the search machinery, not a loss to use (it may "
                     "train to chance);\n# search with a training fitness (e.g. --experiment exp2_proxy) for a loss.\n")


def best_loss_line(text, epsilon):
    """best_loss.txt's line: the `ExpressionLoss` of formula `text` with the search's `epsilon`."""
    if epsilon == formula.EPSILON:
        return f'ExpressionLoss("{text}")'
    return f'ExpressionLoss("{text}", epsilon={epsilon!r})'
