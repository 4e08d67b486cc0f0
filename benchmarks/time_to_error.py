"""Wall time from starting a command-line tool to its error, for typical mistakes, in this tree and
(with --baseline) in an earlier revision checked out to a temporary git worktree, in the same run.

    python benchmarks/time_to_error.py                      # this tree only
    python benchmarks/time_to_error.py --baseline 0ae3aee   # and that commit, same machine, same run

Each mistake runs as a user would type it (`python train_small.py ...` in the checkout, a fresh
process); the figure is the median wall time of --repeats runs, with the exit code and the error's
first line. A tool that checks its input before importing Keras answers in a fraction of a second;
one that imports the frameworks first takes their import time (seconds) for every typo.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TYPO_KEY = "datasets: [fashion_mnist]\nmodels: [small_cnn]\nlosses: [ce, ngl]\nepoch: 3\n"


def mistakes(directory):
    """(what, script, arguments) of each mistake; `directory` holds the YAML file with a typo."""
    typo = directory / "typo.yaml"
    typo.write_text(TYPO_KEY)
    out = str(directory / "out")
    return [
        ("bad flag value (--models resnet5)", "train_small.py", ["--models", "resnet5", "--out", out]),
        ("unknown loss (--losses cee)", "train_small.py", ["--losses", "cee", "--out", out]),
        ("YAML typo key (epoch: 3)", "train_small.py", ["--config", str(typo), "--out", out]),
        ("unknown dataset (--datasets fashionmnist)", "train_small.py",
         ["--datasets", "fashionmnist", "--data-dir", str(directory), "--out", out]),
        ('bad loss argument (--losses "ngl(alpha=x)")', "train_small.py", ["--losses", "ngl(alpha=x)", "--out", out]),
        ("unknown experiment (--experiment exp7)", "search_gp.py", ["--experiment", "exp7", "--out", out]),
    ]


def measure(checkout, repeats):
    """{what: (median seconds, exit code, first stderr line)} of every mistake in `checkout`."""
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for what, script, arguments in mistakes(Path(scratch)):
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                done = subprocess.run([sys.executable, script, *arguments], cwd=checkout, capture_output=True,
                                      text=True, timeout=300)
                times.append(time.perf_counter() - start)
            errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
            results[what] = (statistics.median(times), done.returncode, (errors or ["(no error line)"])[-1][:110])
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="a git revision to measure too (checked out to a temporary worktree)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each mistake (the median is shown)")
    args = parser.parse_args(argv)
    columns = {"this tree": measure(ROOT, args.repeats)}
    if args.baseline:
        with tempfile.TemporaryDirectory() as parent:
            tree = Path(parent) / "baseline"
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.baseline], cwd=ROOT, check=True,
                           capture_output=True)
            try:
                columns[f"baseline {args.baseline}"] = measure(tree, args.repeats)
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    for name, results in columns.items():
        print(f"\n{name}: median wall time to the error of {args.repeats} run(s), exit code, the error")
        for what, (seconds, code, line) in results.items():
            print(f"  {what:<45} {seconds:6.2f} s  exit {code}  {line}")


if __name__ == "__main__":
    main()
