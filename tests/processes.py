"""Processes of a keras-tuner chief and its workers on 127.0.0.1, as the search's and the grid's
multi-process tests start, watch and stop them."""

import json
import os
import signal
import socket
import subprocess
import sys

from tests.paths import ROOT


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def oracle_env():
    """The chief's address on 127.0.0.1 at a free port, as every process of one cluster gets it."""
    return {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(free_port())}


def start(script, args, env, tuner_id):
    """`python script args` as the keras-tuner process `tuner_id`, in its own process group."""
    return subprocess.Popen([sys.executable, str(ROOT / script)] + list(args), cwd=ROOT,
                            env={**os.environ, **env, "KERASTUNER_TUNER_ID": tuner_id},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def stop_all(processes):
    """Kill each process's whole group (its training children included), whatever is left."""
    for p in processes:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def ongoing_trials(out):
    """{tuner id: trial} the chief's oracle has handed out and not yet heard the end of ({} before
    the chief has written its state, or while it writes it)."""
    try:
        return json.loads((out / "tuner" / "oracle.json").read_text())["ongoing_trials"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return {}
