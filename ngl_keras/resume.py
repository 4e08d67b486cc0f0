"""Resume inside a run: keras.callbacks.BackupAndRestore keeps the weights, the optimizer and the
epoch; `EpochLog` keeps what it does not: every finished epoch's logs (the history) and
ReduceLROnPlateau's counters; `InputEpoch` gives the input its epoch; `identity.json` keeps the
run's identity (`records.identity`). A backup that a kill left unreadable, or that was trained with
other settings, is set aside, and the run starts again."""

import json
import shutil
import time
import warnings
from pathlib import Path

import keras

from ngl_keras.files import append_json_line, atomic_write, read_json_lines
from ngl_keras.records import differences

BACKUP_DIR = "backup"
EPOCH_LOG = "epochs.jsonl"
IDENTITY_FILE = "identity.json"  # the identity of the run its directory's backup belongs to
_PLATEAU_STATE = ("wait", "best", "cooldown_counter")


class InputEpoch(keras.callbacks.Callback):
    """Gives the training input the epoch each of fit's epochs begins (its `set_epoch`, when it has
    one): a resumed run's input continues its order and augmentation as if the run had not stopped,
    and an input that Keras reads through tf.data (`data.Placement.keras_input`), which Keras never
    tells of a new epoch, follows fit's epochs."""

    def __init__(self, train_input):
        super().__init__()
        self.train_input = train_input

    def on_epoch_begin(self, epoch, logs=None):
        if hasattr(self.train_input, "set_epoch"):
            self.train_input.set_epoch(epoch)


class EpochLog(keras.callbacks.Callback):
    """Appends each finished epoch's logs and ReduceLROnPlateau state to `run_dir/epochs.jsonl`
    (fsynced) and, when a run resumes, gives the plateau its counters back (the input its epoch:
    `InputEpoch`)."""

    def __init__(self, path, plateau, previous):
        super().__init__()
        self.path, self.plateau, self.previous = path, plateau, previous
        self.lines = list(previous)  # every finished epoch of the run, as written to `path`

    def on_train_begin(self, logs=None):  # after the plateau's own reset
        if self.previous and self.plateau is not None:
            for name in _PLATEAU_STATE:
                setattr(self.plateau, name, self.previous[-1]["plateau"][name])

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

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


def _set_aside(backup, why="unreadable"):
    """Rename a backup that cannot be resumed to backup.<why> (.2, .3, ...), kept to be looked at."""
    aside, k = backup.with_name(f"{backup.name}.{why}"), 1
    while aside.exists():
        k += 1
        aside = backup.with_name(f"{backup.name}.{why}.{k}")
    backup.rename(aside)
    return aside


def _other_settings(run_dir, identity):
    """Which settings of the run's `identity` differ from those its backup in `run_dir` was trained
    with (`records.differences`), or None when they are the same."""
    try:
        stored = json.loads((run_dir / IDENTITY_FILE).read_text())
    except (OSError, ValueError):  # absent (an earlier version wrote the backup) or cut by a kill
        return "unknown (the backup holds no readable identity.json)"
    return differences(stored, identity) or None


def finished_epochs(run_dir, identity=None):
    """The epoch a run in `run_dir` resumes from (None: nothing to resume), and the EpochLog
    lines before it; lines past the backup (a kill between the two writes) are cut. A backup
    that cannot be resumed (`_backup_fault`) is set aside with a warning, and the run starts again.

    `identity` (`records.identity`): a backup trained with other settings is never resumed; it is
    set aside with its epoch log and identity (one warning naming the settings that differ), and the
    run starts again with the new settings, whose identity is stored for the next backup. Restarted,
    not refused as a finished record of other settings is: that record is a result a table would mix
    with the new ones, whereas a backup is unfinished work that no record or table holds yet, and the
    settings given now are the ones asked for; nothing is deleted."""
    backup, log = run_dir / BACKUP_DIR, run_dir / EPOCH_LOG
    fault = _backup_fault(backup) if backup.exists() else None
    if fault is not None:
        aside = _set_aside(backup)
        warnings.warn(f"{run_dir}: its backup cannot be resumed ({fault}: a kill while Keras wrote it); "
                      f"moved to {aside.name}, the run starts again from epoch 0.", stacklevel=2)
    elif backup.exists() and identity is not None:
        other = _other_settings(run_dir, identity)
        if other is not None:
            aside = _set_aside(backup, "stale")
            for name in (EPOCH_LOG, IDENTITY_FILE):
                if (run_dir / name).exists():
                    (run_dir / name).rename(aside / name)
            warnings.warn(f"{run_dir}: its backup was trained with other settings: {other} (backup vs now); "
                          f"moved to {aside.name}, the run starts again from epoch 0 with the new settings.",
                          stacklevel=2)
    if identity is not None:
        atomic_write(run_dir / IDENTITY_FILE, json.dumps(identity, sort_keys=True))
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
    (Path(run_dir) / IDENTITY_FILE).unlink(missing_ok=True)
