"""Wall time of the README's examples, run as a user runs them, each in a fresh process and a fresh
working directory: the main job (`python train_small.py`), the four-loss line and the own-data
example (the README's Python block that calls `ngl_keras.gp.search`, taken from README.md).

    python benchmarks/readme_examples.py            # about 5 minutes on 2 idle CPU cores

Prints the load average before each example, its wall time and its last output lines; the last line
is JSON: {"main_job_s": ..., "four_loss_s": ..., "own_data_s": ..., "load_before": {...}}.
The README's figures come from the record this prints (benchmarks/results/readme/).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def own_data_example(readme):
    """The README's Python block that runs the search on the user's own arrays."""
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    [block] = [b for b in blocks if "ngl_keras.gp.search(" in b]
    return block


def timed(name, command, cwd):
    load = os.getloadavg()
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - start
    tail = (done.stdout + done.stderr).strip().splitlines()[-6:]
    print(f"\n{name}: {seconds:.1f} s (exit {done.returncode}; load average before "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f})\n  $ {' '.join(command)}", flush=True)
    print("\n".join(f"  | {line}" for line in tail), flush=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed (exit {done.returncode})")
    return seconds, round(load[0], 2)


def main():
    readme = (ROOT / "README.md").read_text()
    results, loads = {}, {}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        script = work / "own_data.py"
        script.write_text(own_data_example(readme))
        examples = {
            "main_job": [sys.executable, str(ROOT / "train_small.py")],
            "four_loss": [sys.executable, str(ROOT / "train_small.py"), "--losses", "ce", "ngl", "anyloss_f1",
                          "exp(p) - y*p", "--epochs", "2", "--limit-train", "4096", "--out", "runs/four"],
            "own_data": [sys.executable, str(script)],
        }
        for name, command in examples.items():
            directory = work / name
            directory.mkdir()
            results[f"{name}_s"], loads[name] = timed(name, command, directory)
    print(json.dumps({**{k: round(v, 1) for k, v in results.items()}, "load_before": loads}))


if __name__ == "__main__":
    main()
