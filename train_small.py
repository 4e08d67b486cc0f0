"""The paper's seven-dataset evaluation (Table 2): train a grid of datasets × models × losses
× runs and print the table. With no arguments: real Fashion-MNIST, small CNN, CE vs NGL.

    python train_small.py                                   # configs/quick.yaml -> runs/quick
    python train_small.py --config configs/paper_scratch.yaml --out runs/scratch
    python train_small.py --losses ce ngl "exp(p) - y*p" --epochs 1 --limit-train 2048
    python train_small.py report runs/quick --compare-paper
    python train_small.py --config configs/voc_unet.yaml --data-dir /data/VOCdevkit   # Table 4 (task: segmentation)

Subcommand `report OUT [--compare-paper]` prints the table of a finished (or partial) grid.
"""

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CONFIGS = ROOT / "configs"
BENCHMARK_RECORDS = ROOT / "benchmarks" / "results"  # the seed-to-seed spreads the table is read against


class ShownDefaults(argparse.HelpFormatter):
    """Help that shows an option's default where it has one of its own; options whose value
    otherwise comes from the grid config say so in the epilog."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help
        return f"{action.help} (default: %(default)s)"


def parse_args(argv):
    if argv[:1] == ["report"]:
        parser = argparse.ArgumentParser(prog="train_small.py report",
                                         description="Print Table 2 from OUT/runs.jsonl.")
        parser.add_argument("out", help="the grid's output directory")
        parser.add_argument("--compare-paper", action="store_true",
                            help="show the published numbers beside ours")
        parser.add_argument("--metric", default=None,
                            help="the record's key to tabulate (test_accuracy, test_nll, test_ece, "
                                 "test_mean_confidence, miou, pixel_accuracy, mean_accuracy; default: the task's)")
        args = parser.parse_args(argv[1:])
        args.command = "report"
        return args
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] + " " + __doc__.splitlines()[1],
        epilog="Also: `train_small.py report OUT [--compare-paper]` prints the table of OUT/runs.jsonl. "
               "Options left out take the grid config's values.",
        formatter_class=ShownDefaults)
    parser.add_argument("--config", default=str(CONFIGS / "quick.yaml"), help="grid config (YAML)")
    parser.add_argument("--out", default=None, help="output directory (default: runs/<config name>)")
    parser.add_argument("--datasets", nargs="+",
                        help="override the grid's datasets: the paper's seven (configs/datasets/) or any image "
                             "classification dataset prepared in tfds's data directory, by its tfds name")
    parser.add_argument("--models", nargs="+", help="override the grid's models")
    parser.add_argument("--losses", nargs="+", help="override the grid's losses (names or formulas)")
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
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also the frameworks' own lines (TensorFlow's start-up banners and C++ logs, "
                             "tfds's warnings); "
                             "sets NGL_KERAS_VERBOSE=1 for every process it starts")
    args = parser.parse_args(argv)
    args.command = "train"
    for name in ("runs", "epochs", "limit_train"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1; got {value}")
    return args


def set_verbosity(args):
    """Before the package loads the frameworks: what ngl_keras.console shows, in this process and
    in every process it starts."""
    os.environ["NGL_KERAS_VERBOSE"] = "1" if getattr(args, "verbose", False) else "0"


def main(argv=None, args=None):
    args = args or parse_args(sys.argv[1:] if argv is None else argv)
    set_verbosity(args)
    from ngl_keras import console

    console.load_frameworks()  # before anything imports Keras: the frameworks' start-up banners filtered
    from ngl_keras import config, report, training
    from ngl_keras.grid import plan
    from ngl_keras.records import check_one_setting_per_dataset, read_records
    from ngl_keras.files import output_directory

    if args.command == "report":
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise ValueError(f"{args.out!r} is a file; give the grid's output directory.")
        path = Path(args.out) / "runs.jsonl"
        records = read_records(path)
        if not records:
            raise ValueError(f"no finished runs in {path}.")
        check_one_setting_per_dataset(records, path)
        print(report.write(records, args.out, args.compare_paper, BENCHMARK_RECORDS, args.metric))
        return 0
    grid = config.grid(args.config)
    if args.weights is not None:
        grid["weights"] = None if args.weights == "none" else args.weights
    grid = config.check_grid(grid, {"datasets": args.datasets, "models": args.models, "losses": args.losses,
                                    "runs": args.runs, "epochs": args.epochs, "limit_train": args.limit_train})
    data_dir = args.data_dir or grid.data_dir
    runs = plan(grid, CONFIGS, data_dir=data_dir)
    out = output_directory(args.out or ROOT / "runs" / Path(args.config).stem)
    records = training.run_grid(
        runs, out, strategy=args.strategy or grid.strategy, data_dir=data_dir,
        mixed_precision=args.mixed_precision if args.mixed_precision is not None else grid.mixed_precision,
        jit_compile=grid.jit_compile, verbose=0 if args.quiet else 2)
    print()
    print(report.write(records, out, args.compare_paper, BENCHMARK_RECORDS))
    figures = ", ".join(str(out / name) for name in report.figures(records))
    print(f"\nresults: {out / 'runs.jsonl'}, {out / 'table.md'}, {out / 'table.csv'}, {figures}")
    return 0


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])  # --help and bad arguments answer before any framework loads
    set_verbosity(arguments)
    from ngl_keras.files import run_cli

    run_cli(lambda: main(args=arguments))
