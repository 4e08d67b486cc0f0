"""The paper's seven-dataset evaluation (Table 2): train a grid of datasets × models × losses
× runs and print the table. With no arguments: real Fashion-MNIST, small CNN, CE vs NGL.

    ngl-train-small                                   # configs/quick.yaml -> runs/quick
    ngl-train-small --config configs/paper_scratch.yaml --out runs/scratch
    ngl-train-small --losses ce ngl "ngl(alpha=3.0)" "exp(p) - y*p" --epochs 1 --limit-train 2048
    ngl-train-small report runs/quick --compare-paper

(`python train_small.py ...` in a checkout is the same.) Subcommand `report OUT [--compare-paper]`
prints the table of a finished (or partial) grid.
"""

import argparse
import os
import sys
from pathlib import Path

from ngl_keras.cli import load_frameworks, parsed_report, parsers, prog, set_verbosity, start
from ngl_keras.resources import configs_dir

SCRIPT, COMMAND = "train_small.py", "ngl-train-small"
# The seed-to-seed spreads the table is read against: in a checkout; an installed package has none.
BENCHMARK_RECORDS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


class ShownDefaults(argparse.HelpFormatter):
    """Help that shows an option's default where it has one of its own; options whose value
    otherwise comes from the grid config say so in the epilog."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help
        return f"{action.help} (default: %(default)s)"


def parse_args(argv):
    name = prog(SCRIPT, COMMAND)
    report, parser = parsers(
        argv, name, __doc__, report="Print Table 2 from OUT/runs.jsonl.", report_help="the grid's output directory",
        epilog=f"Also: `{name} report OUT [--compare-paper]` prints the table of OUT/runs.jsonl. "
               "Options left out take the grid config's values.",
        formatter_class=ShownDefaults)
    if report:
        report.add_argument("--compare-paper", action="store_true", help="show the published numbers beside ours")
        report.add_argument("--metric", default=None,
                            help="the record's key to tabulate (test_accuracy, test_nll, test_ece, "
                                 "test_mean_confidence, miou, pixel_accuracy, mean_accuracy; default: the task's")
        return parsed_report(report, argv)
    parser.add_argument("--config", default=str(configs_dir() / "quick.yaml"), help="grid config (YAML)")
    parser.add_argument("--out", default=None, help="output directory (default: runs/<config name>)")
    parser.add_argument("--datasets", nargs="+",
                        help="override the grid's datasets: the paper's seven (configs/datasets/) or any image "
                             "classification dataset prepared in tfds's data directory, by its tfds name")
    parser.add_argument("--models", nargs="+", help="override the grid's models")
    parser.add_argument("--losses", nargs="+",
                        help='override the grid\'s losses: names, NAME(KEY=VALUE, ...) such as "ngl(alpha=3.0)", '
                             "or formulas")
    parser.add_argument("--runs", type=int, help="runs per dataset × model × loss")
    parser.add_argument("--epochs", type=int, help="epochs for every dataset")
    parser.add_argument("--limit-train", type=int, help="train on the first N training images")
    parser.add_argument("--weights", choices=("none", "imagenet"),
                        help="backbone weights: none (from scratch, Table 2) or imagenet (fine-tuning, Table "
                             "B.2.2; the file must be in ~/.keras/models offline)")
    parser.add_argument("--strategy", choices=("auto", "mirrored", "multiworker", "none"),
                        help="where runs train: auto (several GPUs: mirrored), mirrored (all local devices), "
                             "multiworker (TensorFlow, TF_CONFIG), none (one device)")
    parser.add_argument("--mixed-precision", nargs="?", const=True, default=None,
                        choices=(True, "mixed_float16", "mixed_bfloat16"), metavar="POLICY",
                        help="mixed precision: mixed_float16 (the default when no POLICY is given) or "
                             "mixed_bfloat16")
    parser.add_argument("--data-dir", help="tfds data directory; segmentation: the dataset's root on disk "
                                           "(VOCdevkit, the COCO-Stuff directory)")
    parser.add_argument("--compare-paper", action="store_true", help="show the published numbers")
    parser.add_argument("--worker-timeout", type=float, default=600.0,
                        help="over several processes or machines (KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and "
                             "KERASTUNER_ORACLE_PORT set, as for the search): seconds of a worker's silence after "
                             "which the chief hands its run to another")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also the frameworks' own lines (TensorFlow's start-up banners and C++ logs, "
                             "tfds's warnings); "
                             "sets NGL_KERAS_VERBOSE=1 for every process it starts")
    args = parser.parse_args(argv)
    args.command = "train"
    for key in ("runs", "epochs", "limit_train"):
        value = getattr(args, key)
        if value is not None and value < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1; got {value}")
    if not args.worker_timeout > 0:
        parser.error(f"--worker-timeout must be > 0 seconds; got {args.worker_timeout:g}")
    return args


def checked_grid(args):
    """The grid the config and the flags give, every name and setting checked without Keras: the
    names (any capitals, `ngl(alpha=3.0)`), the datasets (the paper's, or prepared in the data
    directory), the paper's datasets' settings and each model's smallest image."""
    from ngl_keras import config, names
    from ngl_keras.data import registry

    grid = config.grid(args.config)
    if args.weights is not None:
        grid["weights"] = None if args.weights == "none" else args.weights
    losses = [names.check_loss(item) for item in args.losses] if args.losses else None
    grid = config.check_grid(grid, {"datasets": args.datasets, "models": args.models, "losses": losses,
                                    "runs": args.runs, "epochs": args.epochs, "limit_train": args.limit_train})
    grid = grid.replace(losses=[names.check_loss(item) for item in grid.losses])
    if grid.task != "classification":
        return grid  # its datasets and models are the task's registries', checked when the grid is planned
    grid = grid.replace(models=[names.model_name(model) for model in grid.models],
                        datasets=[registry.known_name(dataset, args.data_dir) for dataset in grid.datasets])
    for dataset in grid.datasets:
        if dataset not in registry.DATASETS:
            continue  # another tfds dataset: its settings need its facts, read by tfds when the grid is planned
        settings = config.dataset_settings(dataset, configs_dir(), grid.settings.get(dataset))
        for model in grid.models:
            if settings.image_size is not None and settings.image_size < names.MODELS[model].min_size:
                raise ValueError(names.image_size_error(model, settings.image_size, dataset))
    return grid


def report(args):
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"{args.out!r} is a file; give the grid's output directory.")
    path = Path(args.out) / "runs.jsonl"
    if not path.is_file():  # answered before any framework loads
        raise ValueError(f"no finished runs in {path}.")
    load_frameworks()
    from ngl_keras import report as report_module
    from ngl_keras.records import check_one_setting_per_dataset, read_records

    records = read_records(path)
    if not records:
        raise ValueError(f"no finished runs in {path}.")
    check_one_setting_per_dataset(records, path)
    print(report_module.write(records, args.out, args.compare_paper, _benchmark_records(), args.metric))
    return 0


def _benchmark_records():
    return BENCHMARK_RECORDS if BENCHMARK_RECORDS.is_dir() else None


def main(argv=None, args=None):
    args = args or parse_args(sys.argv[1:] if argv is None else argv)
    set_verbosity(args)
    if args.command == "report":
        return report(args)
    grid = checked_grid(args)  # before any framework loads: a mistake answers at once
    load_frameworks()  # before anything imports Keras: the backend chosen, its start-up banners filtered
    from ngl_keras import report as report_module
    from ngl_keras import training
    from ngl_keras.files import output_directory
    from ngl_keras.grid import plan
    from ngl_keras.grid_workers import GridStopped

    data_dir = args.data_dir or grid.data_dir
    runs = plan(grid, configs_dir(), data_dir=data_dir)
    out = output_directory(args.out or Path("runs") / Path(args.config).stem)
    try:
        records = training.run_grid(
            runs, out, strategy=args.strategy or grid.strategy, data_dir=data_dir,
            mixed_precision=args.mixed_precision if args.mixed_precision is not None else grid.mixed_precision,
            jit_compile=grid.jit_compile, verbose=0 if args.quiet else 2, worker_timeout=args.worker_timeout)
    except GridStopped as stopped:
        print(f"error: {stopped}", file=sys.stderr)
        return 1
    if records is None:  # a worker: the chief prints the table
        return 0
    print()
    print(report_module.write(records, out, args.compare_paper, _benchmark_records()))
    figures = ", ".join(str(out / name) for name in report_module.figures(records))
    print(f"\nresults: {out / 'runs.jsonl'}, {out / 'table.md'}, {out / 'table.csv'}, {figures}")
    return 0


def run(argv=None):
    """The console command `ngl-train-small`."""
    # a worker's and the chief's line per run show as they happen, also when their output is a pipe
    start(parse_args, main, argv, line_buffered="KERASTUNER_TUNER_ID" in os.environ)
