"""Resume inside a run: keras.callbacks.BackupAndRestore keeps the weights, the optimizer and the
epoch; `EpochLog` keeps what it does not: every finished epoch's logs (the history) and
ReduceLROnPlateau's counters. A backup that a kill left unreadable is set aside, and the run starts again."""

import json
import shutil
import time
import warnings
from pathlib import Path

import keras

from ngl_keras.files import append_json_line, atomic_write, read_json_lines

BACKUP_DIR = "backup"
EPOCH_LOG = "epochs.jsonl"
_PLATEAU_STATE = ("wait", "best", "cooldown_counter")


class EpochLog(keras.callbacks.Callback):
    """Appends each finished epoch's logs and ReduceLROnPlateau state to `run_dir/epochs.jsonl`
    (fsynced) and, when a run resumes, gives the plateau its counters back and the input its
    epoch (so that the shuffling continues as if the run had not stopped)."""

    def __init__(self, path, plateau, previous, train_input):
        super().__init__()
        self.path, self.plateau, self.previous, self.train_input = path, plateau, previous, train_input
        self.lines = list(previous)  # every finished epoch of the run, as written to `path`

    def on_train_begin(self, logs=None):  # after the plateau's own reset
        if self.previous and self.plateau is not None:
            for name in _PLATEAU_STATE:
                setattr(self.plateau, name, self.previous[-1]["plateau"][name])

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()
        if hasattr(self.train_input, "set_epoch"):
            self.train_input.set_epoch(epoch)

    def on_epoch_end(self, epoch, logs=None):
        state = {name: float(getattr(self.plateau, name)) for name in _PLATEAU_STATE} \
            if self.plateau is not None else None
        line = {"epoch": epoch, "logs": {k: float(v) for k, v in (logs or {}).items()}, "plateau": state,
                "seconds": round(time.perf_counter() - self.started, 3)}
        append_json_line(self.path, line)
        self.lines.append(line)


def _backup_fault(backup):
    """Why the BackupAndRestore directory `backup` cannot be resumed, or None when it can. Keras
    writes the weights, then the metadata, in place and not atomically (keras 3.15.1): a kill during
    either write leaves a cut or empty file, and Keras would then fail the resume every time."""
    import h5py  # Keras's own weights format; opening the file reads only its header

    metadata, weights = backup / "training_metadata.json", backup / "latest.weights.h5"
    try:
        epoch = json.loads(metadata.read_text())["epoch"]
    except FileNotFoundError:
        return f"{metadata.name} is missing"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{metadata.name} is empty or cut ({type(error).__name__})"
    if not isinstance(epoch, int) or epoch < 0:
        return f"{metadata.name} holds epoch {epoch!r}"
    try:
        with h5py.File(weights, "r"):
            pass
    except FileNotFoundError:
        return f"{weights.name} is missing"
    except OSError as error:
        return f"{weights.name} cannot be read ({error})"
    return None


def _set_aside(backup):
    """Rename a backup that cannot be resumed to backup.unreadable (.2, .3, ...), kept to be looked at."""
    aside, k = backup.with_name(backup.name + ".unreadable"), 1
    while aside.exists():
        k += 1
        aside = backup.with_name(f"{backup.name}.unreadable.{k}")
    backup.rename(aside)
    return aside


def finished_epochs(run_dir):
    """The epoch a run in `run_dir` resumes from (None: nothing to resume), and the EpochLog
    lines before it; lines past the backup (a kill between the two writes) are cut. A backup
    that cannot be resumed (`_backup_fault`) is set aside with a warning, and the run starts again."""
    backup, log = run_dir / BACKUP_DIR, run_dir / EPOCH_LOG
    fault = _backup_fault(backup) if backup.exists() else None
    if fault is not None:
        aside = _set_aside(backup)
        warnings.warn(f"{run_dir}: its backup cannot be resumed ({fault}: a kill while Keras wrote it); "
                      f"moved to {aside.name}, the run starts again from epoch 0.", stacklevel=2)
    if not backup.exists():
        log.unlink(missing_ok=True)
        return None, []
    epoch = int(json.loads((backup / "training_metadata.json").read_text())["epoch"])
    lines = [line for line in read_json_lines(log) if line["epoch"] < epoch]
    if len(lines) != epoch:  # the log must cover every backed-up epoch; else start over
        shutil.rmtree(backup)
        log.unlink(missing_ok=True)
        return None, []
    atomic_write(log, "".join(json.dumps(line) + "\n" for line in lines))
    return epoch, lines


def discard_backup(run_dir):
    """Remove a run's backup once its record is written."""
    shutil.rmtree(Path(run_dir) / BACKUP_DIR, ignore_errors=True)
    (Path(run_dir) / EPOCH_LOG).unlink(missing_ok=True)
