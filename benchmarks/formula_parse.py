"""Time to parse formulas of growing length, against the parser of an earlier revision in the same run.

    python benchmarks/formula_parse.py                      # this tree only
    python benchmarks/formula_parse.py --baseline 21365ff   # and the parser of that commit, same run

Two shapes: a flat sum "p*y + p*y + ..." (one tree level per term, so long ones exceed the depth
limit: the time is that of the answer, a parse or a ValueError) and a balanced sum
"((p*y + p*y) + (p*y + p*y)) + ..." (depth log2 of the terms). Each figure is the median CPU time of
`--repeats` parses; a parser linear in the formula's length keeps time / length flat. The last line
is JSON: {"this": {shape: {terms: seconds}}, "baseline": {...}}.
"""

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def flat(terms):
    return " + ".join(["p*y"] * terms)


def balanced(levels):
    return "p*y" if levels == 0 else f"({balanced(levels - 1)} + {balanced(levels - 1)})"


def load_parser(revision):
    """The `parse` function of the formula language at `revision` (None: this tree): ngl_keras/formula.py,
    or ngl_keras/losses/expression.py where it lived before."""
    if revision is None:
        from ngl_keras import formula

        return formula.parse
    for where in ("ngl_keras/formula.py", "ngl_keras/losses/expression.py"):
        shown = subprocess.run(["git", "show", f"{revision}:{where}"], cwd=ROOT, capture_output=True, text=True)
        if shown.returncode == 0:
            break
    shown.check_returncode()
    path = Path(tempfile.mkdtemp()) / "formula_baseline.py"
    path.write_text(shown.stdout)
    spec = importlib.util.spec_from_file_location("formula_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parse


def seconds(parse, text, repeats):
    times = []
    for _ in range(repeats):
        started = time.process_time()
        try:
            parse(text)
        except (ValueError, RecursionError):
            pass  # an answer too: the depth limit (this tree) or the old parser's crash
        times.append(time.process_time() - started)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="git revision whose parser to time in the same run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cases = {"flat": {n: flat(n) for n in (1000, 2000, 4000, 8000)},
             "balanced": {2 ** k: balanced(k) for k in (10, 12, 14)}}
    parsers = {"this": load_parser(None)}
    if args.baseline:
        parsers["baseline"] = load_parser(args.baseline)
    result = {}
    for name, parse in parsers.items():
        result[name] = {}
        for shape, texts in cases.items():
            result[name][shape] = {}
            for terms, text in texts.items():
                result[name][shape][terms] = round(seconds(parse, text, args.repeats), 4)
                print(f"{name:<9}{shape:<9}{terms:>7} terms {len(text):>8} chars "
                      f"{result[name][shape][terms]:>9.4f} s", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
