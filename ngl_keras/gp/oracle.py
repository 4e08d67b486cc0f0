"""keras-tuner orchestration, a chief and its workers: work served as trials by an Oracle and
done by a Tuner, one trial at a time. Two kinds of work: the search's candidates (GPOracle owns
the GP state, GPTuner evaluates a candidate's fitness) and a grid's runs (GridOracle holds the
runs to train and hands each record to the chief's store, GridTuner trains a run). The search runs
in one process or as a chief and N workers; a grid uses these only as a chief and N workers
(KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT).

What keras-tuner (1.4.8) leaves to us, and this module adds (`ServedOracle`, `WorkerTuner`):
- a lost worker: a worker sends a heartbeat every HEARTBEAT_S seconds while it trains; the
  chief hands the work of a worker silent for `worker_timeout` seconds to another, and
  forgets the worker (one that comes back is told to stop, or its late result is used once);
- the chief's end: it serves until the search is complete (or stopped) and every worker it
  knows has been told so or is lost, then exits, whatever happened to the workers;
- a bounded wait: a worker gives up on a chief that does not answer within `worker_timeout`;
- errors: a candidate that diverged or ran out of memory is a failed candidate (counted by
  reason); any other error stops the search, with the candidate, keeping its state. A run's
  error in a worker stops the grid (a diverged run is a record, as in one process).
"""

import contextlib
import io
import json
import os
import signal
import threading
import time
import traceback

import keras_tuner
from keras_tuner.engine import base_tuner
from keras_tuner.engine import trial as trial_module

from ngl_keras import console
from ngl_keras.files import append_json_line, atomic_write
from ngl_keras.gp.evolution import FAILURES, WORST, CandidateFailed, SearchStopped, fitness_text
from ngl_keras.records import code_version

HEARTBEAT_S = 2.0  # a training worker tells the chief it is alive this often
# A waiting worker retries the chief's address after 250 ms at first, then at most every second (gRPC
# adds ±20 % jitter).
RECONNECT_MS = (250, 1000)
# An oracle call slower than this (a chief screening a whole batch) holds up every worker's
# heartbeat: silence is counted from its end.
SLOW_CALL_S = 1.0
ERROR_FILE = "error.txt"
FAILED_METRIC = "failed_"  # + reason: a candidate's failure travels to the chief as a metric
SEARCH_ID = "search"  # a fixed hyperparameter: the hash of the search's (or grid's) settings
RECORD = "record"  # a finished run's record travels to the chief in this hyperparameter, as JSON text
TRAINED = "trained"  # a trained run's only metric (keras-tuner scores every trial by one)


def candidates_of(values):
    """[(candidate id, formula)] of a search trial's hyperparameter values: one candidate, or
    several to train as one population (ids separated by spaces, formulas by newlines)."""
    ids, formulas = values["candidate"].split(" "), values["formula"].split("\n")
    if len(ids) != len(formulas):
        raise ValueError(f"trial of {len(ids)} candidates with {len(formulas)} formulas: {values!r}")
    return list(zip(ids, formulas))


def candidate_metric(k, name):
    """The name of the k-th candidate's metric `name` in a trial (the first's is `name` itself)."""
    return name if k == 0 else f"{name}@{k}"


# keras-tuner's private names: this module is the only one of the package that uses them. Each
# says what public API was missing (checked against keras-tuner 1.4.8; pyproject.toml bounds it
# <1.5), and tests/test_private_apis.py names the one a new version removed.

def role():
    """This process's part in keras-tuner's distributed mode: "alone", "chief" or "worker".
    A tuner id without the chief's address (or an address without its port) is a ValueError: such
    a worker would otherwise do all the work alone, beside the chief's workers. keras-tuner's own
    default id, "tuner0", names a process that runs alone and is accepted without an address."""
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID")
    if tuner_id not in (None, "tuner0") and "KERASTUNER_ORACLE_IP" not in os.environ:
        raise ValueError(f"KERASTUNER_TUNER_ID={tuner_id} is set but KERASTUNER_ORACLE_IP is not: set "
                         "KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT to the chief's address on every machine "
                         "(or unset KERASTUNER_TUNER_ID to run in one process).")
    if "KERASTUNER_ORACLE_IP" in os.environ and not ("KERASTUNER_ORACLE_PORT" in os.environ and tuner_id):
        raise ValueError("KERASTUNER_ORACLE_IP is set without " + " and ".join(
            name for name in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if not os.environ.get(name)) +
            ": set the chief's port, and KERASTUNER_TUNER_ID (chief, worker0, worker1, ...) on each machine.")
    # keras_tuner.src.distribute.utils.has_chief_oracle/is_chief_oracle: no public way to ask
    # the role (keras-tuner 1.4.8 reads the KERASTUNER_* variables only here).
    from keras_tuner.src.distribute import utils as dist_utils

    if not dist_utils.has_chief_oracle():
        return "alone"
    return "chief" if dist_utils.is_chief_oracle() else "worker"


def _tuner_directory(oracle):
    """The `directory` the tuner gave `oracle` (the search directory)."""
    # Oracle._directory: set by BaseTuner through Oracle._set_project_dir; no public accessor on
    # the oracle (keras-tuner 1.4.8).
    return str(oracle._directory)


def _oracle_file(oracle):
    """Where keras-tuner keeps the oracle's state."""
    # Oracle._get_oracle_fname: the path Oracle.save/reload use; no public accessor (1.4.8).
    return oracle._get_oracle_fname()


def _trial_directory(oracle, trial_id):
    """The directory of one trial's state (created)."""
    # Oracle._get_trial_dir: BaseTuner.get_trial_dir is public but the oracle has no tuner (1.4.8).
    return oracle._get_trial_dir(trial_id)


class CandidateError(keras_tuner.errors.FatalError):
    """An error while evaluating a candidate that is not one of FAILURES: it stops the search."""

    def __init__(self, candidate, formula, error):
        self.candidate, self.formula = candidate, formula
        self.traceback = "".join(traceback.format_exception(error))
        super().__init__(f"candidate {candidate} ({formula}) raised {type(error).__name__}: {error}")


class ServedOracle(keras_tuner.Oracle):
    """An oracle whose trials a chief serves to workers (module docstring): a worker's calls are
    its heartbeat, the work of a worker silent for `worker_timeout` seconds goes back to the queue
    (`release`), and the chief knows when it may exit (`search_over`).

    A subclass names its work (`kind`: what the chief runs; `work`: one trial's unit, also the
    hyperparameter that holds its id) and says when it has ended (`ended`)."""

    kind, work = "search", "candidate"

    def __init__(self, objective, search_id="", seed=0, worker_timeout=600.0, log=print, clock=time.monotonic):
        super().__init__(objective=objective, max_trials=10**7, seed=seed, max_retries_per_trial=0,
                         max_consecutive_failed_trials=10**9)
        # The identity of the settings in the space a worker reads first: a worker started with
        # other settings is refused, even without a shared filesystem.
        self.search_id = search_id
        self.hyperparameters.Fixed(SEARCH_ID, search_id)
        self.worker_timeout, self.log, self.clock = worker_timeout, log, clock
        self.last_seen = {}  # tuner id -> clock time of its last call
        self.stalled_until = clock()
        self.lost_trials = set()
        self.fatal = None  # why the work stops, after an error in a worker
        # keras-tuner's per-trial tables (Display) only with -v: we log a line per trial.
        self.verbose = 1 if console.is_verbose() else 0

    def release(self, work_id):
        """Give the work `work_id` of a lost or failed trial back to the queue."""
        raise NotImplementedError

    def ended(self):
        """The work is complete or stopped."""
        raise NotImplementedError

    # What workers call (through the chief's gRPC server).

    def _seen(self, tuner_id):
        self.last_seen[tuner_id] = self.clock()

    @keras_tuner.synchronized
    def create_trial(self, tuner_id):
        self._seen(tuner_id)
        started = self.clock()
        trial = super().create_trial(tuner_id)
        if self.clock() - started > SLOW_CALL_S:
            self.stalled_until = self.clock()
        return trial

    @keras_tuner.synchronized
    def get_trial(self, trial_id):
        """Also a worker's heartbeat for the trial it trains."""
        self._seen_with(trial_id)
        return super().get_trial(trial_id)

    def _seen_with(self, trial_id):
        for tuner_id, trial in self.ongoing_trials.items():
            if trial.trial_id == trial_id:
                self._seen(tuner_id)

    # What the chief does between calls.

    @keras_tuner.synchronized
    def release_lost_workers(self):
        """Forget the workers silent for more than `worker_timeout` seconds, and hand the
        work they were doing to others."""
        now = self.clock()
        for tuner_id in sorted(self.tuner_ids):
            silence = now - max(self.last_seen.get(tuner_id, now), self.stalled_until)
            if silence <= self.worker_timeout:
                continue
            self.tuner_ids.discard(tuner_id)
            trial = self.ongoing_trials.pop(tuner_id, None)
            if trial is None:
                self.log(f"{tuner_id}: silent for {silence:.0f} s; forgotten.")
                continue
            work_id = trial.hyperparameters.values[self.work]
            self.release(work_id)
            self.lost_trials.add(trial.trial_id)
            trial.status = trial_module.TrialStatus.FAILED
            trial.message = f"{tuner_id} was silent for {silence:.0f} s (worker_timeout)"
            self._save_trial(trial)
            self.save()
            self.log(f"{tuner_id}: silent for {silence:.0f} s while training {self.work} {work_id}; "
                     "it goes back to the queue.")

    @keras_tuner.synchronized
    def search_over(self):
        """The work has ended (complete or stopped), and no worker is still owed an answer."""
        return self.ended() and not self.tuner_ids

    # State: written atomically.

    def save(self):
        atomic_write(_oracle_file(self), json.dumps(self.get_state()))

    def _save_trial(self, trial):
        # Overrides Oracle._save_trial (private): keras-tuner 1.4.8 writes every trial's state
        # through it and offers no public hook to make that write atomic.
        directory = _trial_directory(self, trial.trial_id)
        os.makedirs(directory, exist_ok=True)
        atomic_write(os.path.join(directory, "trial.json"), json.dumps(trial.get_state()))


class GPOracle(ServedOracle):
    """Hands out GP candidates as trials ({"candidate": id, "formula": text}; up to `population`
    of them per trial, trained together by a worker whose fitness can: `candidates_of`) and feeds
    their fitness back to the `Evolution`; on a chief, also watches the workers (module docstring)."""

    def __init__(self, evolution, fitness_size=1, seed=0, worker_timeout=600.0, log=print,
                 clock=time.monotonic, search_id="", population=1):
        super().__init__(keras_tuner.Objective("fitness_0", "min"), search_id, seed, worker_timeout, log, clock)
        self.evolution = evolution
        self.fitness_size, self.population = fitness_size, population

    def release(self, work_id):
        for candidate in work_id.split(" "):
            self.evolution.release(candidate)

    def ended(self):
        return self.evolution.finished or self.evolution.stopped is not None or self.fatal is not None

    def populate_space(self, trial_id):
        if self.fatal:
            return {"status": trial_module.TrialStatus.STOPPED}
        action, candidate_id, text = self.evolution.propose()
        if action == "done":
            self.save()  # the last generation closed in propose(): a re-run finds the search complete
            return {"status": trial_module.TrialStatus.STOPPED}
        if action == "wait":
            return {"status": trial_module.TrialStatus.IDLE}
        ids, texts = [candidate_id], [text]
        while len(ids) < self.population:  # more of the same generation's queue, never a new batch
            if not any(c["status"] == "queued" for c in self.evolution.batch):
                break
            action, candidate_id, text = self.evolution.propose()
            ids.append(candidate_id)
            texts.append(text)
        return {"status": trial_module.TrialStatus.RUNNING,
                "values": {"candidate": " ".join(ids), "formula": "\n".join(texts)}}

    @keras_tuner.synchronized
    def end_trial(self, trial):
        self._seen_with(trial.trial_id)
        stored = self.trials[trial.trial_id]
        candidates = candidates_of(stored.hyperparameters.values)
        if trial.status == trial_module.TrialStatus.COMPLETED:
            metrics = stored.metrics
            for k, (candidate, _) in enumerate(candidates):
                names = [candidate_metric(k, f"fitness_{i}") for i in range(self.fitness_size)]
                failure = next((r for r in FAILURES if metrics.exists(candidate_metric(k, FAILED_METRIC + r))), None)
                if failure is None and all(metrics.exists(n) for n in names):
                    fitness = [metrics.get_last_value(n) for n in names]
                else:
                    fitness = [WORST] * self.fitness_size
                    failure = failure or FAILURES[0]
                # Report before keras-tuner saves, so that the saved state includes this fitness. A
                # late result of a worker thought lost counts once; the second is ignored.
                self.evolution.report(candidate, fitness, failure=failure)
        elif trial.trial_id not in self.lost_trials:
            # The worker's own error (not one of FAILURES): the search stops; the candidates
            # go back to the queue, so that a re-run after the fix evaluates them.
            for candidate, _ in candidates:
                self.evolution.release(candidate)
            self.fatal = self._error_summary(" ".join(c for c, _ in candidates), "; ".join(f for _, f in candidates))
        super().end_trial(trial)

    def _error_summary(self, candidate, formula):
        path = os.path.join(_tuner_directory(self), ERROR_FILE)
        first = open(path).readline().strip() if os.path.exists(path) else ""
        return (first or f"candidate {candidate} ({formula}) failed in a worker") + \
            f" (traceback in {path}); the search state is kept: fix the cause and re-run the same commands to resume."

    # State: written atomically.

    def get_state(self):
        state = super().get_state()
        state["gp"] = self.evolution.get_state()
        return state

    def set_state(self, state):
        super().set_state(state)
        if SEARCH_ID not in self.hyperparameters.values:  # saved before the id was kept
            self.hyperparameters.Fixed(SEARCH_ID, self.search_id)
        self.evolution.set_state(state["gp"])


class GridOracle(ServedOracle):
    """Serves a grid's runs as trials ({"run": key}), in the order of `keys`. The record a worker
    sends back with its trial goes to `on_record(key, record)` (the chief's store) once per run,
    whoever sends it first: a worker thought lost may still finish the run it was given."""

    kind, work = "grid", "run"

    def __init__(self, keys, on_record=None, grid_id="", worker_timeout=600.0, log=print, clock=time.monotonic):
        super().__init__(keras_tuner.Objective(TRAINED, "max"), grid_id, 0, worker_timeout, log, clock)
        self.queue = list(keys)
        self.on_record = on_record
        self.recorded = set()
        # Guards `queue` and `recorded` between the store (end_trial) and release_lost_workers.
        self.store_lock = threading.Lock()

    def populate_space(self, trial_id):
        with self.store_lock:
            if self.fatal is None and self.queue:
                return {"status": trial_module.TrialStatus.RUNNING, "values": {self.work: self.queue.pop(0)}}
        if self.fatal is None and self.ongoing_trials:  # a run in flight may come back to the queue
            return {"status": trial_module.TrialStatus.IDLE}
        return {"status": trial_module.TrialStatus.STOPPED}

    def release(self, work_id):
        with self.store_lock:
            if work_id not in self.recorded and work_id not in self.queue:
                self.queue.insert(0, work_id)

    def ended(self):
        return self.fatal is not None or (not self.queue and not self.ongoing_trials)

    def end_trial(self, trial):
        """Store the trial's record (before the worker hears back), then end it. Not under
        keras_tuner.synchronized: the store may raise (a full disk), and that lock is not
        released by an error (keras-tuner 1.4.8); the worker is then told of the error and keeps
        its run's backup."""
        key = self.trials[trial.trial_id].hyperparameters.values[self.work]
        text = trial.hyperparameters.values.get(RECORD)
        if trial.status == trial_module.TrialStatus.COMPLETED and text is not None:
            with self.store_lock:
                if key not in self.recorded:
                    try:
                        self.on_record(key, json.loads(text))
                    except Exception as error:
                        self.fatal = f"the record of run {key} could not be stored: {error}"
                        raise
                    self.recorded.add(key)
                    if key in self.queue:
                        self.queue.remove(key)
        self._end_trial(trial)

    @keras_tuner.synchronized
    def _end_trial(self, trial):
        worker = next((tuner_id for tuner_id, ongoing in self.ongoing_trials.items()
                       if ongoing.trial_id == trial.trial_id), None)
        self._seen_with(trial.trial_id)
        stored = self.trials[trial.trial_id]
        key = stored.hyperparameters.values[self.work]
        trial.hyperparameters = stored.hyperparameters  # the record is kept in runs.jsonl, not twice
        if trial.status != trial_module.TrialStatus.COMPLETED and trial.trial_id not in self.lost_trials:
            # The worker's own error: the grid stops; the run goes back to the queue, so that a
            # re-run after the fix trains it.
            self.release(key)
            self.fatal = (f"run {key} stopped {worker or 'a worker'} with an error (that worker's output "
                          "shows it); the finished runs are in runs.jsonl: fix the cause and re-run the same "
                          "commands to resume.")
        super().end_trial(trial)

    def set_state(self, state):
        """A chief restarted after a kill: the runs still to train come from runs.jsonl (`keys`),
        and the workers of the killed chief have stopped, so none of its trials is ongoing."""
        super().set_state(state)
        self.ongoing_trials, self.tuner_ids = {}, set()
        self.hyperparameters = keras_tuner.HyperParameters()  # this grid's identity, not the saved one
        self.hyperparameters.Fixed(SEARCH_ID, self.search_id)


def _chief_address():
    return f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"


def wait_for_chief(oracle, tuner_id, log):
    """A worker's start: wait, at most `oracle.worker_timeout` seconds, for the chief to answer,
    and check that it runs this search (or grid). Until then a worker writes nothing: it never creates
    or claims the search directory."""
    import grpc

    # keras_tuner.src.distribute.oracle_client.TIMEOUT: the calls of the worker's client (which the
    # tuner makes, not exported by keras-tuner 1.4.8) wait an hour for the chief (the module constant,
    # read at each call; no public setting). keras_tuner.src.protos: the chief's service, for the wait.
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_client

    oracle_client.TIMEOUT = oracle.worker_timeout
    log(f"{tuner_id}: waiting up to {oracle.worker_timeout:g} s for the chief at {_chief_address()} ...")
    # Our own channel for the wait: gRPC's default reconnection backoff grows to 120 s, so a worker
    # started before its chief could sleep through a chief's whole (short) search; this one retries
    # as RECONNECT_MS says (not grpc.min_reconnect_backoff_ms: that is the connect timeout of an attempt,
    # 20 s by default). The tuner's client, made once the chief has answered, connects at once.
    options = [("grpc.initial_reconnect_backoff_ms", RECONNECT_MS[0]),
               ("grpc.max_reconnect_backoff_ms", RECONNECT_MS[1])]
    with grpc.insecure_channel(_chief_address(), options=options) as channel:
        try:
            response = protos.get_service_grpc().OracleStub(channel).GetSpace(
                protos.get_service().GetSpaceRequest(), wait_for_ready=True, timeout=oracle.worker_timeout)
        except grpc.RpcError as error:
            raise SearchStopped(f"{tuner_id}: no chief answered at {_chief_address()} within "
                                f"{oracle.worker_timeout:g} s ({error.code().name}); start the chief (a chief "
                                "exits when its work is done: see its output), or check KERASTUNER_ORACLE_IP "
                                "and KERASTUNER_ORACLE_PORT.") from None
    space = keras_tuner.HyperParameters.from_proto(response.hyperparameters)
    theirs, ours = space.values.get(SEARCH_ID), oracle.hyperparameters.values[SEARCH_ID]
    if theirs != ours:
        raise ValueError(f"the chief at {_chief_address()} runs a different {oracle.kind} (settings hash "
                         f"{theirs}, this worker's {ours}); start the worker with the chief's config and options.")
    log(f"{tuner_id}: the chief answered; training {oracle.work}s.")


def serve(oracle, log, poll_s=0.5):
    """The chief: serve `oracle` to the workers until `oracle.search_over()`; forget lost
    workers on the way. keras-tuner's own server loop (oracle_chief.start_server) waits for
    every worker id it has seen, so one dead worker kept the chief alive forever."""
    import grpc
    from concurrent import futures

    # keras_tuner.src.distribute.oracle_chief.OracleServicer and keras_tuner.src.protos.
    # get_service_grpc: the servicer and its registration are not exported by keras-tuner (1.4.8),
    # whose public server loop never ends while a lost worker is known; reused as they are.
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    address = _chief_address()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    protos.get_service_grpc().add_OracleServicer_to_server(oracle_chief.OracleServicer(oracle), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if not port:
        raise ValueError(f"the chief cannot listen on {address}; is the port free and the address this machine's?")
    server.start()
    log(f"chief: serving the {oracle.kind} on {address}; workers are forgotten after "
        f"{oracle.worker_timeout:g} s of silence.")
    try:
        while not oracle.search_over():
            time.sleep(poll_s)
            oracle.release_lost_workers()
    finally:
        server.stop(grace=1.0)


class Heartbeat:
    """While a worker trains a trial, tell the chief every HEARTBEAT_S seconds that it is alive."""

    def __init__(self, oracle, trial_id):
        self.oracle, self.trial_id = oracle, trial_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while not self.stop.wait(HEARTBEAT_S):
            try:
                self.oracle.get_trial(self.trial_id)
            except Exception:  # the chief is gone: the worker's next call says so
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()


class Interrupts:
    """Ctrl-C during a search stops it: at once, or, when Python swallows the KeyboardInterrupt (it
    does when the signal lands in a garbage collector's callback: only "Exception ignored" is
    printed, and the search went on), at the start or end of the next candidate (`check`)."""

    def __init__(self):
        self.seen = False
        self.previous = None

    def _handle(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    def check(self):
        if self.seen:
            raise KeyboardInterrupt

    def __enter__(self):
        self.seen = False
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where SIGINT is ignored
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        self.seen = False
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None
        return False


INTERRUPTS = Interrupts()


class WorkerTuner(base_tuner.BaseTuner):
    """A tuner that does one trial at a time (`run_trial`), alone or as a worker of a chief, and
    on a chief serves its oracle (`serve`) without doing any. An error of type `fatal_error` from
    `run_trial` stops this worker; the chief hears of it (a FAILED trial) before it does."""

    fatal_error = keras_tuner.errors.FatalError

    def __init__(self, oracle, directory, log=print, **kwargs):
        self.log = log
        self.role = role()
        if self.role == "worker":
            wait_for_chief(oracle, os.environ["KERASTUNER_TUNER_ID"], log)
        quiet = contextlib.nullcontext() if console.is_verbose() else contextlib.redirect_stdout(io.StringIO())
        with quiet:  # keras-tuner's "Reloading Tuner from ..." (the caller says what it resumes)
            super().__init__(oracle=oracle, directory=str(directory), project_name="tuner",
                             overwrite=False, **kwargs)

    def alive(self, trial):
        """While a worker does `trial`, its heartbeat (a context)."""
        return Heartbeat(self.oracle, trial.trial_id) if self.role == "worker" else contextlib.nullcontext()

    def record_error(self, error):
        """Keep what a `fatal_error` says before this worker stops."""

    def search(self, *args, **kwargs):
        if self.role == "chief":
            self.save()
            return serve(self.oracle, self.log)
        # Our own loop, as keras-tuner's, but resting while the oracle waits for other workers,
        # and telling the chief when an error stops this worker.
        self.on_search_begin()
        while True:
            trial = self._call_chief(self.oracle.create_trial, self.tuner_id)
            if trial.status == trial_module.TrialStatus.STOPPED:
                break
            if trial.status == trial_module.TrialStatus.IDLE:
                time.sleep(0.1)
                continue
            self.on_trial_begin(trial)
            try:
                # BaseTuner._try_run_and_update_trial (private): keras-tuner 1.4.8's own loop
                # (BaseTuner.search) has no public step that runs one trial and records its status.
                self._try_run_and_update_trial(trial, *args, **kwargs)
            except self.fatal_error as error:
                self.record_error(error)
                if self.role == "worker":
                    trial.status = trial_module.TrialStatus.FAILED
                    self._call_chief(self.oracle.end_trial, trial)
                raise
            self._call_chief(self.on_trial_end, trial)
        self.on_search_end()

    def _call_chief(self, call, *args):
        if self.role != "worker":
            return call(*args)
        import grpc

        try:
            return call(*args)
        except grpc.RpcError as error:
            raise SearchStopped(f"{self.tuner_id}: the chief at {_chief_address()} did not answer "
                                f"({error.code().name}); this worker stops.") from None


class GPTuner(WorkerTuner):
    """Evaluates a trial's candidates with `fitness(formula) -> list of floats` (or
    CandidateFailed), several at once with `fitness.many(formulas)` where the fitness has it, and
    logs each finished evaluation to `evaluations.jsonl` in the search directory: one line per
    candidate, its `seconds` the trial's seconds shared out over its candidates (`trial_seconds`
    the whole, `trial_candidates` how many it had)."""

    fatal_error = CandidateError

    def __init__(self, oracle, fitness, search_dir, log=print, **kwargs):
        self.fitness = fitness
        self.search_dir = search_dir
        self.code = code_version()  # once: it runs git, and the code does not change under a worker
        super().__init__(oracle, search_dir, log, **kwargs)

    def run_trial(self, trial, *args, **kwargs):
        candidates = candidates_of(trial.hyperparameters.values)
        started = time.time()
        INTERRUPTS.check()
        try:
            with self.alive(trial):
                if len(candidates) == 1:
                    outcomes = [self._one(candidates[0][1])]
                else:  # a population: trained together where the fitness can
                    many = getattr(self.fitness, "many", None)
                    formulas = [f for _, f in candidates]
                    outcomes = many(formulas) if many else [self._one(f) for f in formulas]
                if len(outcomes) != len(candidates):
                    raise RuntimeError(f"the fitness gave {len(outcomes)} results for {len(candidates)} candidates")
            INTERRUPTS.check()
        except Exception as error:
            first = candidates[0] if len(candidates) == 1 else (
                " ".join(c for c, _ in candidates), "; ".join(f for _, f in candidates))
            raise CandidateError(*first, error) from error
        metrics = {}
        seconds = time.time() - started
        for k, ((candidate, formula), outcome) in enumerate(zip(candidates, outcomes)):
            if isinstance(outcome, CandidateFailed):
                self._announce(candidate, formula, f"failed ({outcome})", started)
                metrics.update({candidate_metric(k, "fitness_0"): WORST,
                                candidate_metric(k, FAILED_METRIC + outcome.reason): 1.0})
                continue
            append_json_line(os.path.join(self.search_dir, "evaluations.jsonl"),
                             {"trial": trial.trial_id, "candidate": candidate, "formula": formula,
                              "fitness": outcome, "tuner": self.tuner_id,
                              "seconds": round(seconds / len(candidates), 3), "trial_seconds": round(seconds, 3),
                              "trial_candidates": len(candidates), "code": self.code})
            self._announce(candidate, formula, "fitness " + fitness_text(outcome), started)
            metrics.update({candidate_metric(k, f"fitness_{i}"): float(v) for i, v in enumerate(outcome)})
        return metrics

    def _one(self, formula):
        """The fitness of one formula, or the CandidateFailed that says why it has none."""
        try:
            return self.fitness(formula)
        except CandidateFailed as failure:
            return failure

    def _announce(self, candidate, formula, outcome, started):
        """One line per candidate (the chief evaluates none: it logs the generations)."""
        who = f"{self.tuner_id}: " if self.role == "worker" else ""
        self.log(f"{who}candidate {candidate} {outcome} in {time.time() - started:.1f} s: {formula}")

    def record_error(self, error):
        atomic_write(os.path.join(self.search_dir, ERROR_FILE), f"{error}\n\n{error.traceback}")


class RunError(keras_tuner.errors.FatalError):
    """A run's error in a worker (its cause: the error itself): it stops the worker and the grid."""

    def __init__(self, key, error):
        self.key = key
        super().__init__(f"run {key} raised {type(error).__name__}: {error}")


class GridTuner(WorkerTuner):
    """A worker of a grid: trains one run per trial with `train(key) -> record`; the record goes
    to the chief with the trial (RECORD), and `on_stored(key)` follows once the chief has stored it
    (the worker then removes the run's backup)."""

    fatal_error = RunError

    def __init__(self, oracle, directory, train=None, on_stored=None, log=print, **kwargs):
        self.train, self.on_stored = train, on_stored
        super().__init__(oracle, directory, log, **kwargs)

    def run_trial(self, trial, *args, **kwargs):
        key = trial.hyperparameters.values[GridOracle.work]
        try:
            with self.alive(trial):
                record = self.train(key)
        except Exception as error:
            raise RunError(key, error) from error
        trial.hyperparameters.Fixed(RECORD, json.dumps(record))
        return {TRAINED: 1.0}

    def on_trial_end(self, trial):
        super().on_trial_end(trial)  # the chief stores the record before it answers
        self.on_stored(trial.hyperparameters.values[GridOracle.work])
