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
    """The records of a JSON-lines file, in order; [] when it does not exist.

    Never writes. A truncated last line (a crash while appending) is skipped; a line that is
    not JSON anywhere else means the file is corrupt, and raises ValueError naming the line.
    A writer that appends after a truncated line repairs the file first, by an atomic rewrite
    of the records read here.
    """
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        lines = handle.read().split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # no newline after it: the append was cut
                break
            raise ValueError(f"{path}: line {number} is not valid JSON; the file is corrupt "
                             "beyond a truncated last line.") from None
    return records


def run_cli(main):
    """Run a command-line `main`, turning a ValueError (bad input) into one line and exit 2."""
    import sys

    try:
        sys.exit(main())
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
