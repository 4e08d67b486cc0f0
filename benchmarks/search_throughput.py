"""How much of a proxy search never trains, and how evaluations scale with keras-tuner workers.

    python benchmarks/search_throughput.py --quick
    python benchmarks/search_throughput.py

1. A seeded search (configs/search/exp2_proxy.yaml, in-process): candidates proposed, rejected
   by reason, cache hits and trainings per generation, and the share never trained.
2. The same search as a chief with 1 and then 2 workers on 127.0.0.1, each worker pinned to
   one core (os.sched_setaffinity): trained evaluations per minute of each.
The last line is JSON: {"untrained_fraction": ..., "worker_speedup": ...}.
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


def distributed(workers, quick, root):
    out = Path(root) / f"workers{workers}"
    env = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(free_port()),
           "TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"}
    chief = subprocess.Popen(search_args(out, quick), cwd=ROOT, env={**env, "KERASTUNER_TUNER_ID": "chief"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(10)
    started = time.time()
    procs = []
    for i in range(workers):
        p = subprocess.Popen(search_args(out, quick), cwd=ROOT, env={**env, "KERASTUNER_TUNER_ID": f"worker{i}"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.sched_setaffinity(p.pid, {i % os.cpu_count()})
        procs.append(p)
    for p in procs:
        p.wait()
    elapsed = time.time() - started
    chief.wait(timeout=120)
    records = [json.loads(x) for x in (out / "evaluations.jsonl").read_text().splitlines()]
    busy = sum(r["seconds"] for r in records)
    return {"per_minute": len(records) / (elapsed / 60.0), "evaluations": len(records), "seconds": elapsed,
            "seconds_per_evaluation": busy / len(records), "busy_fraction": busy / (elapsed * workers)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
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
                      "evaluations_per_minute": {"1": round(one["per_minute"], 3), "2": round(two["per_minute"], 3)},
                      "busy_fraction": {"1": round(one["busy_fraction"], 3), "2": round(two["busy_fraction"], 3)},
                      "seconds_per_evaluation": {"1": round(one["seconds_per_evaluation"], 2),
                                                 "2": round(two["seconds_per_evaluation"], 2)}}))


if __name__ == "__main__":
    main()
