"""The genetic-programming loss search of the paper (five fitness experiments), resumable
and spread over workers with keras-tuner's chief/worker mode.

    python search_gp.py --config configs/search/exp2_proxy.yaml --out search/exp2
    python search_gp.py --config configs/search/exp2_proxy.yaml --out search/exp2 --population 8 --generations 3
    python search_gp.py report search/exp2

Re-running the same command resumes. Distributed: start the chief with
KERASTUNER_TUNER_ID=chief and workers with KERASTUNER_TUNER_ID=worker0, worker1, ..., all with
KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT set to the chief's address (README.md).
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent
CONFIGS = ROOT / "configs"


def parse_args(argv):
    if argv[:1] == ["report"]:
        parser = argparse.ArgumentParser(prog="search_gp.py report")
        parser.add_argument("out", help="the search directory")
        args = parser.parse_args(argv[1:])
        args.command = "report"
        return args
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="search config (configs/search/<experiment>.yaml)")
    parser.add_argument("--experiment", help="shorthand for --config configs/search/<name>.yaml")
    parser.add_argument("--out", required=True, help="search directory (resumed when it exists)")
    parser.add_argument("--population", type=int)
    parser.add_argument("--generations", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--limit-train", type=int)
    parser.add_argument("--data-dir", help="tfds data directory")
    args = parser.parse_args(argv)
    args.command = "search"
    if bool(args.config) == bool(args.experiment):
        parser.error("give exactly one of --config and --experiment")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from ngl_keras.gp import search

    if args.command == "report":
        print(search.report(args.out))
        return 0
    path = Path(args.config) if args.config else CONFIGS / "search" / f"{args.experiment}.yaml"
    if args.experiment and not path.exists():
        known = sorted(p.stem for p in (CONFIGS / "search").glob("*.yaml"))
        raise ValueError(f"unknown experiment {args.experiment!r}; known: {', '.join(known)}.")
    overrides = {"population": args.population, "generations": args.generations, "seed": args.seed,
                 "epochs": args.epochs, "limit_train": args.limit_train}
    cfg = search.load_config(path, overrides)
    evo = search.run(cfg, args.out, CONFIGS, args.data_dir)
    if evo is not None:
        print()
        print(search.report(args.out))
    return 0


if __name__ == "__main__":
    from ngl_keras.files import run_cli

    run_cli(main)
