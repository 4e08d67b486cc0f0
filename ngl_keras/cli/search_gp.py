"""The genetic-programming loss search of the paper (five fitness experiments), resumable
and spread over workers with keras-tuner's chief/worker mode.

    ngl-search-gp --experiment exp2_proxy --out search/exp2
    ngl-search-gp --config configs/search/exp2_proxy.yaml --out search/exp2 --population 8 --generations 3
    ngl-search-gp report search/exp2

(`python search_gp.py ...` in a checkout is the same.) Re-running the same command resumes.
Distributed: start the chief with KERASTUNER_TUNER_ID=chief and workers with
KERASTUNER_TUNER_ID=worker0, worker1, ..., all with KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT
set to the chief's address (README.md).
"""

import argparse
import sys
from pathlib import Path

from ngl_keras.cli import load_frameworks, parsed_report, parsers, prog, set_verbosity, start
from ngl_keras.resources import configs_dir

SCRIPT, COMMAND = "search_gp.py", "ngl-search-gp"


def at_least(least, kind=int):
    """An argparse type: a number of `kind` >= `least`."""
    name = "an integer" if kind is int else "a number"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {name} >= {least:g}; got {text!r}") from None
        if not value >= least:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be {name} >= {least:g}; got {text}")
        return value

    return parse


def experiments():
    """The experiments configs/search/ holds, by name."""
    from ngl_keras.gp.search_settings import DEFAULTS_FILE

    return sorted(p.stem for p in (configs_dir() / "search").glob("*.yaml") if p.name != DEFAULTS_FILE)


def parse_args(argv):
    name = prog(SCRIPT, COMMAND)
    report, parser = parsers(
        argv, name, __doc__, report="Print a search's generation log, hall of fame and best loss.",
        report_help="the search directory",
        epilog=f"Also: `{name} report OUT` prints a search's generation log, hall of fame and best "
               "loss. Options left out take the config's values (configs/search/<experiment>.yaml over "
               "configs/search/defaults.yaml).")
    if report:
        return parsed_report(report, argv)
    parser.add_argument("--config", help="search config (YAML); give this or --experiment")
    parser.add_argument("--experiment",
                        help=f"shorthand for --config configs/search/<name>.yaml: {', '.join(experiments())}")
    parser.add_argument("--out", required=True, help="search directory (resumed when it exists)")
    parser.add_argument("--population", type=at_least(2), help="individuals kept per generation (μ)")
    parser.add_argument("--generations", type=at_least(0), help="generations after the initial population")
    parser.add_argument("--seed", type=int, help="seed of the search's random generator and of its trainings")
    parser.add_argument("--epochs", type=at_least(1), help="epochs of each fitness training")
    parser.add_argument("--limit-train", type=at_least(1), help="train on the first N images of the train split")
    parser.add_argument("--worker-timeout", type=at_least(10, float), metavar="SECONDS",
                        help="hand a candidate to another worker after this much silence from its worker "
                             "(config key worker_timeout; default 600)")
    parser.add_argument("--data-dir", help="tfds data directory")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also the frameworks' own lines (TensorFlow's start-up banners and C++ logs, "
                             "tfds's warnings, keras-tuner's per-trial tables); "
                             "sets NGL_KERAS_VERBOSE=1 for every process it starts")
    args = parser.parse_args(argv)
    args.command = "search"
    if bool(args.config) == bool(args.experiment):
        parser.error("give exactly one of --config and --experiment")
    return args


def checked_config(args):
    """The `Search` the config and the flags give, checked without Keras (names, keys, values)."""
    from ngl_keras.gp import search_settings

    known = experiments()
    experiment = args.experiment.strip().lower() if args.experiment else None
    if experiment and experiment not in known:
        from ngl_keras.names import did_you_mean

        raise ValueError(f"unknown experiment {args.experiment!r}; known: {', '.join(known)}"
                         f"{did_you_mean(experiment, known)}; give one with --experiment, or a config file "
                         "with --config.")
    path = Path(args.config) if args.config else configs_dir() / "search" / f"{experiment}.yaml"
    overrides = {"population": args.population, "generations": args.generations, "seed": args.seed,
                 "epochs": args.epochs, "limit_train": args.limit_train, "worker_timeout": args.worker_timeout}
    return search_settings.load_config(path, overrides, defaults=configs_dir() / "search" / search_settings.DEFAULTS_FILE)


def main(argv=None, args=None):
    args = args or parse_args(sys.argv[1:] if argv is None else argv)
    set_verbosity(args)
    if args.command == "report":
        load_frameworks()
        from ngl_keras.gp import search_run

        print(search_run.report(args.out))
        return 0
    cfg = checked_config(args)  # before any framework loads: a mistake answers at once
    load_frameworks()  # before anything imports Keras: the backend chosen, its start-up banners filtered
    from ngl_keras.gp import search_run
    from ngl_keras.gp.evolution import SearchStopped

    try:
        evo = search_run.run(cfg, args.out, configs_dir(), args.data_dir)
    except SearchStopped as stopped:
        print(f"error: {stopped}", file=sys.stderr)
        return 1
    if evo is not None:  # the generations were printed as they finished
        print()
        print(search_run.report(args.out, generations=False))
    return 0


def run(argv=None):
    """The console command `ngl-search-gp`."""
    start(parse_args, main, argv, line_buffered=True)
