"""The record store: OUT/runs.jsonl, one record per finished run, and what makes a record count as
a given run (its identity: every setting that changes the result, and the versions it ran with)."""

import functools
import json
import platform
import subprocess
from pathlib import Path

import keras
import numpy as np

from ngl_keras.files import append_json_line, read_json_lines
from ngl_keras.recipe import dtype_policy

# runs.jsonl: append-only, fsynced; read by `files.read_json_lines` (a truncated last line is
# skipped with a warning, and removed by the next append).

RECORD_KEYS = ("key", "dataset", "model", "loss", "run", "status", "test_accuracy", "history")


def read_records(path):
    """The records of a grid's runs.jsonl; a line without the keys a record has raises ValueError."""
    return read_json_lines(path, required=RECORD_KEYS)


def append_record(path, record):
    append_json_line(path, record)


def record_backend(record):
    """The Keras backend a record was trained on (records written before the JAX backend: TensorFlow)."""
    return record.get("backend") or (record.get("versions") or {}).get("backend") or "tensorflow"


def check_one_setting_per_dataset(records, path):
    """Refuse records of one dataset trained with different settings: a table of them would
    compare losses trained differently."""
    seen = {}
    for record in records:
        settings = _plain({**{k: record.get(k) for k in ("config", "weights", "dtype_policy")},
                           "backend": record_backend(record)})
        first = seen.setdefault(record["dataset"], (record["key"], settings))
        if first[1] != settings:
            raise ValueError(f"{path} would mix settings for dataset {record['dataset']!r}: "
                             f"{first[0]} and {record['key']} differ in "
                             f"{differences(first[1], settings)}; a table of them would compare "
                             "losses trained differently (use another --out for other settings).")


def differences(a, b):
    """The settings that differ between mappings `a` and `b` (at most four), with both values;
    "" when none do."""

    def walk(x, y, prefix):
        if isinstance(x, dict) and isinstance(y, dict):
            return [found for key in sorted(set(x) | set(y), key=str)
                    for found in walk(x.get(key), y.get(key), f"{prefix}{key}.")]
        return [] if x == y else [f"{prefix[:-1]} ({json.dumps(x)} vs {json.dumps(y)})"]

    return ", ".join(walk(a, b, "")[:4])


def identity(run, mixed_precision=False):
    """Every setting that changes the result of `run` (a `grid.RunSpec`), as plain JSON data (see
    `training.run_grid`): for a tfds dataset read by name also its version, for in-memory arrays a
    hash of their contents, for a model function its name and a hash of its model's config."""
    out = {"dataset": run.dataset, "model": run.model, "loss": run.loss.identity(), "run": run.run,
           "seed": run.seed, "weights": run.weights, "settings": run.settings.to_json(),
           "dtype_policy": dtype_policy(mixed_precision)}
    if run.task != "classification":  # classification's identities stay as they were before tasks
        out["task"] = run.task
        return _plain(out)
    data = run.dataset_info
    if not data.registered:
        out["data"] = {"tfds_version": data.version} if data.arrays is None else {"sha256": data.fingerprint}
    if run.model_source is not None:
        out["model_function"] = run.model_source.identity()
    return _plain(out)


def _plain(value):
    """`value` as it reads back from JSON (tuples become lists), so identities compare equal."""
    return json.loads(json.dumps(value))


def finished_keys(runs, records, path, mixed_precision=False, identities=None):
    """Keys of `runs` already in `records`; refuses a directory whose records were trained with
    other settings, for the same run or for the same dataset (the table would mix them).
    `identities`: {key: `identity`} of the runs, when the caller has them."""
    planned = identities or {run.key: identity(run, mixed_precision) for run in runs}
    for record in records:
        expected = planned.get(record["key"])
        if expected is None:
            continue
        if "identity" not in record:
            raise ValueError(f"{path} holds {record['key']} without the settings it was trained with "
                             "(written by an earlier version); train into another --out.")
        if record["identity"] != expected:
            raise ValueError(f"{path} already holds {record['key']} trained with other settings: "
                             f"{differences(record['identity'], expected)} (there vs now); train into "
                             "another --out, or use the settings of that directory.")
    planned_records = [{"key": run.key, "dataset": run.dataset, "config": run.settings.to_json(),
                        "weights": run.weights, "dtype_policy": dtype_policy(mixed_precision),
                        "backend": keras.backend.backend()} for run in runs]
    check_one_setting_per_dataset(records + planned_records, path)
    return {record["key"] for record in records if record["key"] in planned}


@functools.cache
def code_version():
    """The code a record was trained with: the git commit of the checkout ngl_keras is imported from, with
    "-dirty" when tracked files differ from it; "ngl_keras <version>" for an installed package (no checkout)."""
    import ngl_keras

    checkout = Path(ngl_keras.__file__).resolve().parent.parent
    try:
        if not (checkout / ".git").exists():
            raise OSError("not a checkout")
        def git(*args):
            return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True,
                                  timeout=20, check=True).stdout.strip()
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return f"ngl_keras {ngl_keras.__version__}"


def versions():
    """Versions of what a record's numbers depend on: the code (git commit), Python, Keras, the backend's
    library, numpy."""
    backend = keras.backend.backend()
    out = {"code": code_version(), "python": platform.python_version(), "keras": keras.__version__,
           "numpy": np.__version__, "backend": backend}
    if backend in ("tensorflow", "jax", "torch"):
        module = __import__(backend)
        out[backend] = module.__version__
    return out
