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


def read_json_lines(path):
    """The records of a JSON-lines file, without ever writing to it.

    A last line cut by a crash while it was written is left out with a warning (the writer that
    appends next repairs the file); any other line that is not JSON is corruption, and raises.
    """
    import warnings

    lines = open(path).read().split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if any(rest.strip() for rest in lines[number:]):
                raise ValueError(f"{path}: line {number} is not valid JSON; the file is corrupt "
                                 "beyond a truncated last line.") from None
            warnings.warn(f"{path}: leaving out a truncated last line (a crash while writing).")
    return records


def run_cli(main):
    """Run a command-line `main`, turning a ValueError (bad input) into one line and exit 2."""
    import sys

    try:
        sys.exit(main())
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
