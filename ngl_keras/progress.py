"""Progress display: Keras's progress bar when stdout is a terminal; else (a log file, a job's output)
a line every PROGRESS_EVERY_S seconds inside an epoch and one per finished epoch, each epoch line with
the grid's time left."""

import time

import keras

PROGRESS_EVERY_S = 10.0


class GridClock:
    """The time a grid has left, from the epochs finished so far in this process: an estimate
    from the first finished epoch on (the first epoch includes tracing: an overestimate)."""

    def __init__(self, epochs, clock=time.monotonic):
        self.epochs, self.clock = epochs, clock
        self.finished = 0
        self.started = clock()

    def epoch_finished(self):
        self.finished += 1

    def elapsed(self):
        return self.clock() - self.started

    def eta(self):
        """'ETA 12.3 min', or 'ETA after the first epoch' before one has finished."""
        if not self.finished:
            return "ETA after the first epoch"
        left = self.elapsed() / self.finished * max(self.epochs - self.finished, 0)
        return f"ETA {left / 60:.1f} min"


class Progress(keras.callbacks.Callback):
    """Progress lines for output that is not a terminal: inside an epoch, at most one line every
    `every` seconds (step/steps, images/s, elapsed; the same during validation), and one line per
    finished epoch with its metrics and the grid's ETA (`grid`, a GridClock). With `periodic`
    False (Keras's progress bar shows the steps and metrics) only the ETA line is written.
    Hooks are on batch *begin*: Keras keeps reading batch logs asynchronously."""

    def __init__(self, batch_size, grid=None, every=PROGRESS_EVERY_S, periodic=True, log=print,
                 clock=time.monotonic):
        super().__init__()
        self.batch_size, self.grid, self.every, self.periodic = batch_size, grid, every, periodic
        self.log, self.clock = log, clock

    def _epoch(self):
        return f"epoch {self.epoch + 1}/{self.params.get('epochs', '?')}"

    def on_epoch_begin(self, epoch, logs=None):
        self._flush()
        self.epoch = epoch
        self.started = self.last = self.clock()

    def on_train_end(self, logs=None):
        self._flush()

    def _flush(self):
        """The ETA line held back until Keras's progress bar has finished the epoch's line."""
        if getattr(self, "pending", None):
            self.log(self.pending)
        self.pending = None

    def on_test_begin(self, logs=None):
        self.validation_started = self.clock()

    def on_train_batch_begin(self, batch, logs=None):
        self._tick(batch, self.started, f"step {batch}/{self.params.get('steps') or '?'}")

    def on_test_batch_begin(self, batch, logs=None):
        if hasattr(self, "epoch"):  # validation inside fit
            self._tick(batch, self.validation_started, f"validation step {batch}")

    def _tick(self, done, since, where):
        now = self.clock()
        if not self.periodic or now - self.last < self.every:
            return
        self.last = now
        rate = done * self.batch_size / (now - since) if now > since else 0.0
        self.log(f"  {self._epoch()}: {where}, {rate:.0f} images/s, {now - self.started:.0f} s")

    def on_epoch_end(self, epoch, logs=None):
        if self.grid is not None:
            self.grid.epoch_finished()
        eta = f"; {self.grid.eta()}" if self.grid is not None else ""
        if not self.periodic:  # Keras's bar writes its epoch line after every other callback
            self.pending = f"  {self._epoch()} done{eta}"
            return
        metrics = ", ".join(f"{k} {float(v):.4g}" for k, v in (logs or {}).items())
        self.log(f"  {self._epoch()}: {self.clock() - self.started:.0f} s, {metrics}{eta}")
