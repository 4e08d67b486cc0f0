"""keras-tuner orchestration: an Oracle that owns the GP state, and a Tuner that evaluates
one candidate per trial. The same pair runs in one process or as a chief and N workers
(KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT)."""

import json
import os
import time

import keras_tuner
from keras_tuner.engine import base_tuner
from keras_tuner.engine import trial as trial_module

from ngl_keras.files import append_json_line, atomic_write
from ngl_keras.gp.evolution import WORST


class GPOracle(keras_tuner.Oracle):
    """Hands out GP candidates as trials ({"candidate": id, "formula": text}) and feeds their
    fitness back to the `Evolution`. A failed trial gets the worst fitness, and failures
    never end the search."""

    def __init__(self, evolution, fitness_size=1, seed=0):
        super().__init__(objective=keras_tuner.Objective("fitness_0", "min"), max_trials=10**7,
                         seed=seed, max_retries_per_trial=0,
                         max_consecutive_failed_trials=10**9)
        self.evolution = evolution
        self.fitness_size = fitness_size

    def populate_space(self, trial_id):
        action, candidate_id, text = self.evolution.propose()
        if action == "done":
            return {"status": trial_module.TrialStatus.STOPPED}
        if action == "wait":
            return {"status": trial_module.TrialStatus.IDLE}
        return {"status": trial_module.TrialStatus.RUNNING,
                "values": {"candidate": candidate_id, "formula": text}}

    def end_trial(self, trial):
        stored = self.trials[trial.trial_id]
        candidate = stored.hyperparameters.values["candidate"]
        fitness = [WORST] * self.fitness_size
        if trial.status == trial_module.TrialStatus.COMPLETED:
            metrics = stored.metrics
            names = [f"fitness_{i}" for i in range(self.fitness_size)]
            if all(metrics.exists(n) for n in names):
                fitness = [metrics.get_last_value(n) for n in names]
        # Report before keras-tuner saves, so that the saved state includes this fitness.
        self.evolution.report(candidate, fitness)
        super().end_trial(trial)

    def get_state(self):
        state = super().get_state()
        state["gp"] = self.evolution.get_state()
        return state

    def set_state(self, state):
        super().set_state(state)
        self.evolution.set_state(state["gp"])

    def save(self):
        atomic_write(self._get_oracle_fname(), json.dumps(self.get_state()))

    def _save_trial(self, trial):
        directory = self._get_trial_dir(trial.trial_id)
        os.makedirs(directory, exist_ok=True)
        atomic_write(os.path.join(directory, "trial.json"), json.dumps(trial.get_state()))


class GPTuner(base_tuner.BaseTuner):
    """Evaluates one candidate per trial with `fitness(formula) -> list of floats` and logs
    each finished evaluation to `evaluations.jsonl` in the search directory."""

    def __init__(self, oracle, fitness, search_dir, **kwargs):
        self.fitness = fitness
        self.search_dir = search_dir
        super().__init__(oracle=oracle, directory=str(search_dir), project_name="tuner",
                         overwrite=False, **kwargs)

    def run_trial(self, trial, *args, **kwargs):
        values = trial.hyperparameters.values
        started = time.time()
        fitness = self.fitness(values["formula"])
        append_json_line(os.path.join(self.search_dir, "evaluations.jsonl"),
                         {"trial": trial.trial_id, "candidate": values["candidate"],
                          "formula": values["formula"], "fitness": fitness, "tuner": self.tuner_id,
                          "seconds": round(time.time() - started, 3)})
        return {f"fitness_{i}": float(v) for i, v in enumerate(fitness)}

    def search(self, *args, **kwargs):
        from keras_tuner.src.distribute import utils as dist_utils

        if dist_utils.is_chief_oracle():
            return super().search(*args, **kwargs)  # serves the oracle until the search ends
        # Own loop, as keras-tuner's, but resting while the oracle waits for other workers.
        self.on_search_begin()
        while True:
            trial = self.oracle.create_trial(self.tuner_id)
            if trial.status == trial_module.TrialStatus.STOPPED:
                break
            if trial.status == trial_module.TrialStatus.IDLE:
                time.sleep(0.1)
                continue
            self.on_trial_begin(trial)
            self._try_run_and_update_trial(trial, *args, **kwargs)
            self.on_trial_end(trial)
        self.on_search_end()
