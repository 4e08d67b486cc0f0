"""Writing results so that a killed process (kill -9) never loses or corrupts finished work, and
the one reader of the JSON-lines files those results are kept in."""

import errno
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# TensorFlow raises ResourceExhaustedError (no OSError) when a checkpoint or TensorBoard write
# meets a full disk; its message holds the C library's text.
_DISK_FULL_TEXT = os.strerror(errno.ENOSPC)  # "No space left on device"


class DiskFull(OSError):
    """A write that met a full disk (or a full quota): which file, and how many bytes it needed
    when known. Finished work is on disk: once space is freed the same command resumes."""

    def __init__(self, path, needed=None):
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        self.needed = needed

    def __str__(self):
        try:
            free = shutil.disk_usage(os.path.dirname(os.path.abspath(self.filename))).free
        except OSError:
            free = None
        size = "" if self.needed is None else f" ({self.needed} bytes needed, {free if free is not None else '?'} free)"
        return (f"no space left on device writing {self.filename}{size}; finished results are kept: free space "
                "and run the same command again to resume.")


def is_disk_full(error):
    """Whether `error` is a write that met a full disk: an OSError ENOSPC or EDQUOT, or a backend's
    own error whose message says so (TensorFlow's ResourceExhaustedError)."""
    if isinstance(error, DiskFull):
        return True
    if isinstance(error, OSError) and error.errno in _DISK_FULL:
        return True
    return _DISK_FULL_TEXT in str(error)


def disk_full(error, path):
    """`error` (`is_disk_full`) as a `DiskFull` naming its own file, else `path`."""
    if isinstance(error, DiskFull):
        return error
    return DiskFull(getattr(error, "filename", None) or path)


def _replace_atomically(path, write, needed=None):
    """Call `write(temporary path)`, then rename it over `path`: readers see the old file or the
    new, never half, and a failed write (a full disk) leaves no temporary file and the old file as
    it was. A full disk is raised as `DiskFull`."""
    tmp = f"{path}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, Exception) and is_disk_full(error):
            raise DiskFull(path, needed) from None
        raise
    _fsync_directory(path)


def atomic_write(path, text):
    """Write via a temporary file, fsync and rename: readers see the old file or the new, never half."""

    def write(tmp):
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    _replace_atomically(path, write, needed=len(text.encode()))


def atomic_savefig(figure, path, **kwargs):
    """`figure.savefig(path)` as `atomic_write` writes: the old image or the new, never half; the
    figure is closed afterwards, written or not (every figure here is saved once, when finished)."""
    import matplotlib.pyplot as plt

    def write(tmp):
        with open(tmp, "wb") as handle:
            figure.savefig(handle, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
            handle.flush()
            os.fsync(handle.fileno())

    try:
        _replace_atomically(path, write)
    finally:
        plt.close(figure)


def _fsync_directory(path):
    """Make a rename durable: the directory entry is only on disk once the directory is synced."""
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:  # a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _split_lines(path):
    """(text, complete lines, unfinished tail) of a JSON-lines file; the tail is what follows the last
    newline: empty in a well-formed file, part of a record after a crash while appending."""
    text = Path(path).read_text()
    head, _, tail = text.rpartition("\n")
    lines = head.split("\n") if head or text.startswith("\n") else []
    return text, lines, tail


def read_json_lines(path, required=()):
    """The records (JSON objects) of a JSON-lines file in order; [] when it does not exist. Never writes.

    A last line without its newline that is not valid JSON is what a crash while appending leaves:
    it is skipped with a warning (`append_json_line` removes it before the next append). Any other
    line that is not a JSON object, or lacks one of the `required` keys, raises ValueError naming
    the file and the line: the file is corrupt, and guessing would hide lost or foreign records.
    """
    path = Path(path)
    if not path.exists():
        return []
    if not path.is_file():
        raise ValueError(f"{path} is not a file.")
    _, lines, tail = _split_lines(path)
    records = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            records.append(_parse_line(path, number, line, required))
    if tail.strip():
        try:
            records.append(_parse_line(path, len(lines) + 1, tail, required))
        except ValueError:
            warnings.warn(f"{path}: skipping a truncated last line (a crash while writing); "
                          "the next run that appends removes it.", stacklevel=2)
    return records


def _parse_line(path, number, line, required):
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        raise ValueError(f"{path}: line {number} is not valid JSON; the file is corrupt beyond a "
                         "truncated last line.") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: line {number} is not a JSON object; got {line.strip()[:60]!r}.")
    missing = [key for key in required if key not in record]
    if missing:
        raise ValueError(f"{path}: line {number} lacks the keys {missing}; a record has "
                         f"{', '.join(required)}.")
    return record


def repair_json_lines(path):
    """Finish or drop an unfinished last line (a crash while appending), atomically.

    A tail that is valid JSON only lacks its newline and is kept; any other tail is dropped with a
    warning. The file is rewritten by `atomic_write`, so a failed write (disk full) leaves it as it
    was. Returns whether anything changed.
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return False
    text, _, tail = _split_lines(path)
    kept = text[: len(text) - len(tail)]
    try:
        json.loads(tail)
        kept += tail + "\n"
    except json.JSONDecodeError:
        warnings.warn(f"{path}: removing a truncated last line (a crash while writing): "
                      f"{tail[:60]!r}...", stacklevel=2)
    atomic_write(path, kept)
    return True


def append_json_line(path, record):
    """Append one JSON line and fsync it: once this returns, the line survives a crash.

    An unfinished last line left by an earlier crash is repaired first (`repair_json_lines`), so
    that the new record never lands on the same line as a half-written one.
    """
    repair_json_lines(path)
    line = json.dumps(record) + "\n"
    with open(path, "a") as handle:
        size = handle.tell()
        try:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        except OSError as error:
            if not is_disk_full(error):
                raise
            handle.truncate(size)  # no part of the line: the records before it stay as they were
            raise DiskFull(path, len(line.encode())) from None


def output_directory(path):
    """`path` as a directory that exists and takes files (created if needed); ValueError if not."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output directory {str(path)!r} is a file; give a directory.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ValueError(f"output directory {str(path)!r} cannot be written: "
                         f"{error.strerror or error}.") from None
    return path


def run_cli(main):
    """Run a command-line `main`, turning a ValueError (bad input) into one line and exit 2, an
    OSError (disk full, permissions, a path that vanished) or a backend's error for a full disk
    (`is_disk_full`) into one line and exit 1, and Ctrl-C into
    one line and exit 130 (what finished is on disk: the same command resumes)."""
    import sys

    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: what finished is saved; run the same command again to resume.", file=sys.stderr)
        sys.exit(130)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except Exception as error:  # an OSError, or a backend's error for a full disk
        if not (isinstance(error, OSError) or is_disk_full(error)):
            raise
        print(f"error: {disk_full(error, '?') if is_disk_full(error) else error}", file=sys.stderr)
        sys.exit(1)
