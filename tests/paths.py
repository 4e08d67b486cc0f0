from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


def kill_when_lines(command, path, lines, timeout):
    """Start `command`, SIGKILL its process group once `path` holds `lines` lines (or after
    `timeout` seconds), and return the complete JSON lines it left."""
    import json
    import os
    import signal
    import subprocess
    import time

    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and (not path.exists() or len(path.read_text().splitlines()) < lines):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]
