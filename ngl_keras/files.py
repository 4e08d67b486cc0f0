"""Writing results so that a killed process (kill -9) never loses or corrupts finished work."""

import json
import os


def atomic_write(path, text):
    """Write via a temporary file and rename: readers see the old file or the new, never half."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def append_json_line(path, record):
    """Append one JSON line and fsync it: once this returns, the line survives a crash."""
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def run_cli(main):
    """Run a command-line `main`, turning a ValueError (bad input) into one line and exit 2."""
    import sys

    try:
        sys.exit(main())
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
