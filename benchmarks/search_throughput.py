"""How much of a proxy search never trains, and how evaluations scale with keras-tuner workers.

    python benchmarks/search_throughput.py --quick
    python benchmarks/search_throughput.py

1. A seeded search (configs/search/exp2_proxy.yaml, in-process): candidates proposed, rejected
   by reason, cache hits and trainings per generation, and the share never trained.
2. The same search as a chief with 1 and then 2 workers on 127.0.0.1, each worker pinned to
   one core (os.sched_setaffinity): trained evaluations per minute of each, how busy the
   workers were and how long one evaluation took.
3. The machine's own ceiling for 2 workers: the same evaluation (the proxy fitness of a fixed
   formula) in one process pinned to one core, alone, then in two such processes at once.
The last line is JSON: {"untrained_fraction": ..., "worker_speedup": ..., "two_core_ceiling": ...}.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def search_args(out, quick):
    args = [sys.executable, str(ROOT / "search_gp.py"), "--experiment", "exp2_proxy", "--out", str(out),
            "--seed", "0"]
    if quick:
        args += ["--population", "6", "--generations", "1", "--limit-train", "512"]
    return args


def generations(out):
    return [json.loads(x) for x in (Path(out) / "generations.jsonl").read_text().splitlines()]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ONE_THREAD = {"TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"}


def start_pinned(command, core, env=None, **kwargs):
    """Start `command` with one TensorFlow thread, pinned to `core` (and so are its children)."""
    return subprocess.Popen(command, cwd=ROOT, env={**os.environ, **ONE_THREAD, **(env or {})},
                            preexec_fn=lambda: os.sched_setaffinity(0, {core % os.cpu_count()}), **kwargs)


def distributed(workers, quick, root):
    out = Path(root) / f"workers{workers}"
    oracle = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(free_port())}
    chief = subprocess.Popen(search_args(out, quick), cwd=ROOT,
                             env={**os.environ, **ONE_THREAD, **oracle, "KERASTUNER_TUNER_ID": "chief"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(10)
    started = time.time()
    procs = [start_pinned(search_args(out, quick), i, {**oracle, "KERASTUNER_TUNER_ID": f"worker{i}"},
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(workers)]
    for p in procs:
        p.wait()
    elapsed = time.time() - started
    chief.wait(timeout=120)
    records = [json.loads(x) for x in (out / "evaluations.jsonl").read_text().splitlines()]
    busy = sum(r["seconds"] for r in records)
    return {"per_minute": len(records) / (elapsed / 60.0), "evaluations": len(records), "seconds": elapsed,
            "seconds_per_evaluation": busy / len(records), "busy_fraction": busy / (elapsed * workers)}


PROBE_FORMULA = "0 - y * log(p)"  # cross-entropy, as a candidate would be trained


def evaluation_seconds(quick, repeats):
    """Run in a child pinned to one core: seconds per proxy evaluation of PROBE_FORMULA."""
    from ngl_keras.gp import fitness, search_settings

    overrides = {"limit_train": 512} if quick else {}
    cfg = search_settings.load_config(ROOT / "configs" / "search" / "exp2_proxy.yaml", overrides)
    with tempfile.TemporaryDirectory() as directory:
        evaluate = fitness.TrainingFitness(cfg.fitness.replace(recycle_every=0), ROOT / "configs", directory)
        evaluate(PROBE_FORMULA)  # warm-up: data, traces
        start = time.perf_counter()
        for _ in range(repeats):
            evaluate(PROBE_FORMULA)
        return (time.perf_counter() - start) / repeats


def pinned_evaluations(cores, quick, repeats):
    """Seconds per evaluation of one pinned process per core in `cores`, all started at once."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import search_throughput as s; "
            f"print(s.evaluation_seconds({quick}, {repeats}))")
    procs = [start_pinned([sys.executable, "-c", code], core, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True) for core in cores]
    seconds = []
    for p in procs:
        output = p.communicate()[0].strip().splitlines()
        if p.returncode != 0 or not output:
            raise RuntimeError(f"the pinned evaluation exited with {p.returncode}; run "
                               f"`python -c {code!r}` to see its error")
        seconds.append(float(output[-1]))
    return seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ceiling-only", action="store_true", help="measure only part 3 (a few minutes)")
    args = parser.parse_args()
    repeats = 1 if args.quick else 2
    alone = pinned_evaluations([0], args.quick, repeats)[0]
    together = pinned_evaluations([0, 1], args.quick, repeats)
    ceiling = 2.0 * alone / (sum(together) / len(together))
    print(f"one proxy evaluation pinned to one core: {alone:.1f} s alone, "
          f"{', '.join(f'{t:.1f}' for t in together)} s with one on each core at once: "
          f"2 workers can be at most {ceiling:.2f}x one on this machine")
    if args.ceiling_only:
        print(json.dumps({"two_core_ceiling": round(ceiling, 3), "seconds_alone": round(alone, 2),
                          "seconds_together": [round(t, 2) for t in together]}))
        return
    with tempfile.TemporaryDirectory() as root:
        out = Path(root) / "local"
        subprocess.run(search_args(out, args.quick), cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        gens = generations(out)
        print(f"{'gen':>4}{'proposed':>10}{'rejected':>10}{'cache hits':>12}{'trained':>9}{'seconds':>9}  rejections")
        for g in gens:
            print(f"{g['generation']:>4}{g['proposed']:>10}{sum(g['rejected'].values()):>10}{g['cache_hits']:>12}"
                  f"{g['trained']:>9}{g['wall_time_s']:>9.0f}  {g['rejected']}")
        proposed = sum(g["proposed"] for g in gens)
        trained = sum(g["trained"] for g in gens)
        untrained = 1.0 - trained / proposed
        print(f"never trained: {proposed - trained} of {proposed} proposed ({100 * untrained:.0f}%)")
        one = distributed(1, args.quick, root)
        two = distributed(2, args.quick, root)
        speedup = two["per_minute"] / one["per_minute"]
        # speedup = 2 x (busy fraction ratio) x (evaluation time ratio): where the missing part goes.
        print(f"{'workers':>8}{'evaluations':>13}{'seconds':>9}{'per min':>9}{'s per evaluation':>18}{'busy':>7}")
        for n, r in ((1, one), (2, two)):
            print(f"{n:>8}{r['evaluations']:>13}{r['seconds']:>9.0f}{r['per_minute']:>9.2f}"
                  f"{r['seconds_per_evaluation']:>18.1f}{100 * r['busy_fraction']:>6.0f}%")
        print(f"2 workers: {speedup:.2f}x the evaluations per minute of 1 "
              f"(= 2 x busy {two['busy_fraction'] / one['busy_fraction']:.3f} x evaluation speed "
              f"{one['seconds_per_evaluation'] / two['seconds_per_evaluation']:.3f})")
    print(json.dumps({"untrained_fraction": round(untrained, 4), "worker_speedup": round(speedup, 3),
                      "two_core_ceiling": round(ceiling, 3),
                      "evaluations_per_minute": {"1": round(one["per_minute"], 3), "2": round(two["per_minute"], 3)},
                      "busy_fraction": {"1": round(one["busy_fraction"], 3), "2": round(two["busy_fraction"], 3)},
                      "seconds_per_evaluation": {"1": round(one["seconds_per_evaluation"], 2),
                                                 "2": round(two["seconds_per_evaluation"], 2)}}))


if __name__ == "__main__":
    main()
