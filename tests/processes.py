"""Processes of a keras-tuner chief and its workers on 127.0.0.1, as the search's and the grid's
multi-process tests start, watch and stop them."""

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

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
    process = subprocess.Popen([sys.executable, str(ROOT / script)] + list(args), cwd=ROOT,
                               env={**os.environ, **env, "KERASTUNER_TUNER_ID": tuner_id},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    process.tuner_id = tuner_id
    return process


def wait_for_line(process, text, timeout):
    """Read what `process` prints until it holds `text` (at most `timeout` seconds, else the test fails
    with what it printed). The text read is kept in `process.early`, and `wait_all` puts it back in front
    of the rest. Start the process with PYTHONUNBUFFERED=1, or its lines may come only at its exit."""
    fd, deadline = process.stdout.fileno(), time.time() + timeout
    seen = getattr(process, "early", "")
    while text not in seen:
        left = deadline - time.time()
        chunk = os.read(fd, 65536) if left > 0 and select.select([fd], [], [], left)[0] else b""
        if not chunk:
            raise AssertionError(f"{process.tuner_id} did not print {text!r} within {timeout} s (exit "
                                 f"{process.poll()}); it printed:\n{seen[-3000:]}")
        seen += chunk.decode(errors="replace")
    process.early = seen


def wait_all(processes, timeout):
    """What each process printed, once it has exited (each waited for at most `timeout` seconds, in
    turn). When one does not exit in time, every process is killed and the test fails with what each
    of them printed: a hung cluster shows which member hung and why, not only the one waited on."""
    printed = []
    try:
        for p in processes:
            printed.append(getattr(p, "early", "") + p.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
        late = processes[len(printed)]
        stop_all(processes)
        printed += [getattr(p, "early", "") + p.communicate()[0] for p in processes[len(printed):]]
        report = "\n".join(f"--- {p.tuner_id} (exit {p.returncode}):\n{out[-3000:]}"
                           for p, out in zip(processes, printed))
        raise AssertionError(f"{late.tuner_id} did not exit within {timeout} s; what each process printed:\n"
                             f"{report}") from None
    return printed


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
