"""Does the loss search find good losses? A search on the Fashion-MNIST proxy with CE and NGL
scored by the same fitness, then the top formulas, CE and NGL re-trained on the full training set.

    python benchmarks/search_quality.py --quick         # tiny search and re-training: minutes
    python benchmarks/search_quality.py                 # exp2_proxy's search (population 8,
                                                        # 3 generations), then 3 seeds x 15 epochs
    python benchmarks/search_quality.py --check-proxy   # does the proxy rank losses as full data does?

Stages (each resumable; run the same command again to go on):
1. the search of configs/search/exp2_proxy.yaml (or --population/--generations) in OUT/search,
   with CE and NGL scored as reference points by the search's own fitness (references.json);
2. the `--top` best formulas of the hall of fame, CE and NGL trained on the whole Fashion-MNIST
   training split with configs/quick.yaml's model and settings, `--epochs` epochs, `--seeds`
   seeds (every loss on the same seeds, seed by seed, so that a stopped run keeps paired
   comparisons), through ngl_keras.training (train_small.py's code) into OUT/runs.jsonl;
3. test accuracy mean ± std over seeds and the % change against CE (paper's ±0.5 % rule).

--check-proxy instead scores usable losses (CE, NGL and the other registered losses that train)
with the proxy fitness (recording training and validation accuracy of every run) and trains them
on the whole training split (configs/quick.yaml's schedule, --check-seeds seeds), then prints the
Spearman rank correlation between proxy validation accuracy and full-data test accuracy with its
chance level beside it: the correlation's mean over random orderings of the same losses and the
probability that a random ordering reaches the observed value.

No target on the outcome: it reports what it is. The last line is JSON.
"""

import argparse
import itertools
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from ngl_keras import config, report, training  # noqa: E402
from ngl_keras.distribution import make_strategy  # noqa: E402
from ngl_keras.grid import plan  # noqa: E402
from ngl_keras.files import append_json_line, read_json_lines  # noqa: E402
from ngl_keras.gp import evolution, search_directory, search_run, search_settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
SEARCH_CONFIG = CONFIGS / "search" / "exp2_proxy.yaml"
GRID_CONFIG = CONFIGS / "quick.yaml"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "search-quality"
REFERENCES = ["ce", "ngl"]
# --check-proxy: usable losses only. A formula built to fail ranks last on both sides and lifts the
# correlation of any proxy (with three such among seven losses, a random ordering of the four real
# ones already gives 0.82 on average: issue 21); eight losses give 8! orderings, so that a chance
# agreement is visibly rarer than a real one. Trained in this order on full data.
CHECK_LOSSES = ["ce", "ngl", "focal", "sce", "ce_l2", "bi_tempered", "bi_tempered(t1=0.8, t2=1.2)", "anyloss_f1"]
# The chance level of a Spearman correlation: every ordering of up to this many losses is enumerated
# (8! = 40,320); beyond it, CHANCE_SAMPLES random orderings from a generator seeded with CHANCE_SEED.
EXACT_ORDERINGS_UP_TO = 8
CHANCE_SAMPLES = 100_000
CHANCE_SEED = 0
# --quick: the same code path on a few hundred images.
QUICK = {"population": 4, "generations": 1, "fitness": {"epochs": 1, "limit_train": 512, "runs": 1},
         "epochs": 1, "limit_train": 1024, "seeds": 1, "top": 2}


def search_config(population=None, generations=None, fitness_changes=None):
    cfg = search_settings.load_config(SEARCH_CONFIG, {"population": population, "generations": generations})
    # the reference points this benchmark compares with
    return cfg.replace(fitness=cfg.fitness.replace(**(fitness_changes or {}), references=REFERENCES))


def run_search(cfg, search_dir, data_dir=None, log=print):
    """Run or resume the search; return (hall of fame, {reference: fitness})."""
    started = time.time()
    search_run.run(cfg, search_dir, CONFIGS, data_dir, log)
    log(f"search stage: {(time.time() - started) / 60:.1f} min in this call")
    fame = json.loads((Path(search_dir) / "hall_of_fame.json").read_text())
    references = json.loads((Path(search_dir) / search_directory.REFERENCES_FILE).read_text())
    return fame, references


def found_losses(fame, top):
    """The `top` best formulas of the hall of fame that trained (no failed candidate), as
    grid losses labelled found1, found2, ..."""
    good = [entry for entry in fame if all(v < evolution.WORST for v in entry["fitness"])]
    return [{"name": entry["formula"], "label": f"found{k}", "fitness": entry["fitness"],
             "display": entry["display"], "latex": entry["latex"]} for k, entry in enumerate(good[:top], 1)]


def full_data_runs(losses, seeds, epochs, limit_train=None):
    """Runs of configs/quick.yaml's grid with `losses`, ordered seed by seed (paired seeds)."""
    grid = config.grid(GRID_CONFIG)
    grid.update(losses=losses, runs=seeds)
    overrides = {"epochs": epochs, "limit_train": limit_train}
    return sorted(plan(grid, CONFIGS, overrides), key=lambda r: r.run)  # stable: losses stay in order


def summarise(records, labels):
    """{label: {mean, std, runs, diverged, seeds}} of test accuracy, and % change against CE on
    the seeds both finished (paired)."""
    accuracy = {}
    by_seed = {label: {r["seed"]: r["test_accuracy"] for r in records if r["loss"] == label and r["status"] == "ok"}
               for label in labels}
    for label in labels:
        values = list(by_seed[label].values())
        cell = {"mean": round(float(np.mean(values)), 4) if values else None,
                # sample standard deviation over seeds (0 for a single seed)
                "std": round(float(np.std(values, ddof=1)), 4) if len(values) > 1 else 0.0,
                "runs": len(values), "seeds": sorted(by_seed[label]),
                "diverged": sum(r["loss"] == label and r["status"] != "ok" for r in records)}
        paired = sorted(set(by_seed[label]) & set(by_seed.get("ce", {})))
        if label != "ce" and paired:
            ce = float(np.mean([by_seed["ce"][s] for s in paired]))
            mine = float(np.mean([by_seed[label][s] for s in paired]))
            change = report.percent_change(mine, ce)
            cell.update(change_vs_ce=round(change, 2), verdict=report.verdict(change), paired_seeds=paired)
        accuracy[label] = cell
    return accuracy


def print_table(title, accuracy, fitness):
    print(f"\n{title}")
    print(f"{'loss':<10}{'proxy fitness':>14}{'test accuracy % (mean ± std)':>30}{'seeds':>8}"
          f"{'% vs CE (paired)':>18}{'':>8}")
    for label, a in accuracy.items():
        cell = "–" if a["mean"] is None else f"{100 * a['mean']:.2f} ± {100 * a['std']:.2f}"
        change = f"{a['change_vs_ce']:+.2f}" if "change_vs_ce" in a else ""
        proxy = fitness.get(label)
        proxy = "" if proxy is None else f"{proxy[0]:.4f}"
        print(f"{label:<10}{proxy:>14}{cell:>30}{a['runs']:>8}{change:>18}{a.get('verdict', ''):>8}")


def remaining(runs, records):
    done = {r["key"] for r in records}
    return [run.key for run in runs if run.key not in done]


def quality(args, log=print):
    quick = QUICK if args.quick else {}
    out = Path(args.out)
    cfg = search_config(args.population or quick.get("population"), args.generations or quick.get("generations"),
                        quick.get("fitness"))
    fame, references = run_search(cfg, out / "search", args.data_dir, log)
    top = args.top or quick.get("top", 3)
    found = found_losses(fame, top)
    if not found:
        raise ValueError(f"the search in {out / 'search'} found no formula that trained; nothing to re-train.")
    losses = ["ce", "ngl"] + [{"name": f["name"], "label": f["label"]} for f in found]
    seeds, epochs = args.seeds or quick.get("seeds", 3), args.epochs or quick.get("epochs", 15)
    runs = full_data_runs(losses, seeds, epochs, quick.get("limit_train"))
    for f in found:
        log(f"{f['label']}: proxy fitness {evolution.fitness_text(f['fitness'])}: {f['display']}")
    records = training.run_grid(runs, out, strategy="none", data_dir=args.data_dir, verbose=0, log=log)
    labels = ["ce", "ngl"] + [f["label"] for f in found]
    accuracy = summarise(records, labels)
    fitness = {**{k: references.get(k) for k in REFERENCES}, **{f["label"]: f["fitness"] for f in found}}
    size = "all" if quick.get("limit_train") is None else quick["limit_train"]
    print_table(f"full-data re-training: {epochs} epochs, {seeds} seeds, {size} training images, "
                f"test accuracy", accuracy, fitness)
    left = remaining(runs, records)
    if left:
        print(f"\n{len(left)} of {len(runs)} runs still to train (run the same command again): {', '.join(left)}")
    best = found[0]
    result = {"best_formula": best["name"], "best_display": best["display"], "best_latex": best["latex"],
              "best_found_accuracy": accuracy[best["label"]]["mean"],
              "ce_accuracy": accuracy["ce"]["mean"], "ngl_accuracy": accuracy["ngl"]["mean"],
              "proxy_fitness": fitness, "accuracy": accuracy,
              "found": [{k: f[k] for k in ("label", "name", "display", "latex", "fitness")} for f in found],
              "search": {"experiment": cfg.experiment, "population": cfg.population,
                         "generations": cfg.generations, "fitness": cfg.fitness.to_json()},
              "retrain": {"epochs": epochs, "seeds": seeds, "limit_train": quick.get("limit_train"),
                          "runs": len(runs), "remaining": left}}
    return result


# --check-proxy: proxy fitness against full-data accuracy.

def ranks(values):
    """Ranks 1..n of `values`, ties sharing their mean rank."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="stable")
    out = np.empty(len(values))
    out[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):
        out[values == v] = out[values == v].mean()
    return out


def spearman(a, b):
    """Spearman's rank correlation of two sequences (average ranks for ties)."""
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def spearman_chance(a, b, exact_up_to=EXACT_ORDERINGS_UP_TO, samples=CHANCE_SAMPLES, seed=CHANCE_SEED):
    """The chance level of spearman(a, b): its distribution when the values of `b` are given to the
    losses in a random order (the null hypothesis that the proxy's order says nothing of the full
    data's). Returns {"observed", "mean", "p", "losses", "orderings", "exact"}: `mean` is the correlation's
    mean over the orderings, `p` the share of orderings whose correlation reaches the observed one
    (a one-sided permutation test). Every ordering is enumerated for up to `exact_up_to` losses,
    else `samples` random orderings drawn by a generator seeded with `seed` (the same figures on
    every run). None when either side is constant (no correlation)."""
    ra, rb = ranks(a), ranks(b)
    n = len(ra)
    if n < 2 or np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return None
    exact = n <= exact_up_to
    if exact:
        orderings = np.array(list(itertools.permutations(range(n))))
    else:
        orderings = np.random.default_rng(seed).permuted(np.tile(np.arange(n), (samples, 1)), axis=1)
    # Every ordering of rb has rb's mean and spread, so its correlation with ra is one dot product.
    ca, cb = ra - ra.mean(), rb - rb.mean()
    correlations = cb[orderings] @ ca / np.sqrt((ca @ ca) * (cb @ cb))
    observed = float(cb @ ca / np.sqrt((ca @ ca) * (cb @ cb)))
    # a tolerance, so that an ordering equal to the observed one counts despite rounding
    p = float(np.mean(correlations >= observed - 1e-9))
    return {"observed": observed, "mean": float(correlations.mean()), "p": p,
            "losses": n, "orderings": len(orderings), "exact": exact}


def chance_text(chance):
    """One line: the chance level beside an observed Spearman correlation."""
    if chance is None:
        return "no chance level (one side is constant)"
    orderings = (f"all {chance['orderings']:,} orderings" if chance["exact"]
                 else f"{chance['orderings']:,} random orderings (seed {CHANCE_SEED})")
    return (f"chance, over {orderings} of the same {chance['losses']} losses: mean {chance['mean']:.3f}, "
            f"P(rho >= {chance['observed']:.3f}) = {chance['p']:.4f}")


def proxy_runs(cfg, loss, out_path, data_dir=None, log=print):
    """Each proxy run of `loss`: training and validation accuracy, the search fitness's own runs
    (ngl_keras.gp.fitness._Trainer's grid), appended to `out_path` and read back on resume."""
    from ngl_keras.gp.fitness import _Trainer

    done = [r for r in read_json_lines(out_path) if r["loss"] == loss]  # not run records
    trainer = _Trainer(cfg.fitness, CONFIGS, out_path.parent, data_dir, cfg.seed)
    runs = plan({**trainer.grid, "losses": [loss]}, CONFIGS, trainer.overrides)
    for run in runs[len(done):]:
        record = training.train_run(run, trainer.datasets, out_path.parent / "scratch",
                                    make_strategy("none"), verbose=0, evaluate_test=False, logs=False)
        history = record["history"]
        ok = record["status"] == "ok" and np.isfinite((history.get("val_accuracy") or [np.nan])[-1])
        entry = {"loss": loss, "run": run.run, "seed": run.seed, "status": "ok" if ok else "diverged",
                 "train_accuracy": history["accuracy"][-1] if ok else None,
                 "val_accuracy": history["val_accuracy"][-1] if ok else None,
                 "wall_time_s": record["wall_time_s"]}
        append_json_line(out_path, entry)
        log(f"proxy {loss} run {run.run}: train {entry['train_accuracy']}, validation {entry['val_accuracy']}")
        done.append(entry)
    return done


def check_proxy(args, log=print):
    out = Path(args.out) / "proxy-check"
    out.mkdir(parents=True, exist_ok=True)
    quick = QUICK if args.quick else {}
    cfg = search_config(fitness_changes=quick.get("fitness"))
    losses = CHECK_LOSSES
    proxy = {}
    for loss in losses:
        entries = proxy_runs(cfg, loss, out / "proxy.jsonl", args.data_dir, log)
        ok = [e for e in entries if e["status"] == "ok"]
        mean = lambda key: float(np.mean([e[key] for e in ok])) if ok else None  # noqa: E731
        # the search's fitness: a failed run makes the whole candidate fail (no validation accuracy)
        proxy[loss] = {"val_accuracy": mean("val_accuracy") if len(ok) == len(entries) else None,
                       "train_accuracy": mean("train_accuracy"), "runs": len(entries)}
    epochs = args.check_epochs or quick.get("epochs") or config.grid(GRID_CONFIG)["settings"]["fashion_mnist"]["epochs"]
    seeds = args.check_seeds or quick.get("seeds", 3)
    runs = full_data_runs(losses, seeds, epochs, quick.get("limit_train"))
    records = training.run_grid(runs, out / "full", strategy="none", data_dir=args.data_dir, verbose=0, log=log)
    accuracy = summarise(records, losses)
    print(f"\nproxy ({cfg.fitness.epochs} epochs of {cfg.fitness.limit_train} images, "
          f"{cfg.fitness.runs} runs) against full data ({epochs} epochs, {seeds} seeds)")
    print(f"{'loss':<30}{'proxy train %':>14}{'proxy val %':>12}{'full test %':>12}")
    for loss in losses:
        p, a = proxy[loss], accuracy[loss]
        fmt = lambda v: "–" if v is None else f"{100 * v:.2f}"  # noqa: E731
        print(f"{loss:<30}{fmt(p['train_accuracy']):>14}{fmt(p['val_accuracy']):>12}{fmt(a['mean']):>12}")
    # a diverged loss ranks last on either side; a loss not yet trained on full data is left out
    both = [x for x in losses if accuracy[x]["runs"] or accuracy[x]["diverged"]]
    proxy_of = lambda x: proxy[x]["val_accuracy"] or 0.0  # noqa: E731
    full_of = lambda x: accuracy[x]["mean"] or 0.0  # noqa: E731
    chance = spearman_chance([proxy_of(x) for x in both], [full_of(x) for x in both]) if len(both) > 2 else None
    rho = None if chance is None else chance["observed"]
    print(f"\nSpearman rank correlation, {len(both)} losses trained on full data: "
          f"{'–' if rho is None else f'{rho:.3f}'}; {chance_text(chance) if len(both) > 2 else 'too few losses'}")
    return {"spearman": rho, "chance": chance, "proxy": proxy,
            "full_data": accuracy, "full_epochs": epochs, "full_seeds": seeds,
            "remaining": remaining(runs, records)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny search and re-training (minutes)")
    parser.add_argument("--check-proxy", action="store_true", help="rank check of the proxy fitness instead")
    parser.add_argument("--out", default=None, help=f"records (default {DEFAULT_OUT.relative_to(ROOT)}, "
                        "benchmarks/out/search-quality-quick with --quick)")
    parser.add_argument("--population", type=int, help="search population (default: the config's)")
    parser.add_argument("--generations", type=int, help="search generations (default: the config's)")
    parser.add_argument("--top", type=int, help="formulas re-trained (default 3)")
    parser.add_argument("--seeds", type=int, help="seeds per loss in the re-training (default 3)")
    parser.add_argument("--epochs", type=int, help="epochs of the re-training (default 15)")
    parser.add_argument("--check-seeds", type=int, help="seeds of --check-proxy's full-data runs (default 3)")
    parser.add_argument("--check-epochs", type=int, help="epochs of --check-proxy's full-data runs "
                        "(default configs/quick.yaml's)")
    parser.add_argument("--data-dir", help="tfds data directory")
    args = parser.parse_args(argv)
    for name in ("population", "generations", "top", "seeds", "epochs", "check_seeds", "check_epochs"):
        value = getattr(args, name)
        if value is not None and value < (2 if name == "population" else 0 if name == "generations" else 1):
            parser.error(f"--{name.replace('_', '-')} is out of range; got {value}")
    if args.out is None:
        args.out = str(ROOT / "benchmarks" / "out" / "search-quality-quick" if args.quick else DEFAULT_OUT)
    result = check_proxy(args) if args.check_proxy else quality(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    from ngl_keras.files import run_cli

    run_cli(main)
