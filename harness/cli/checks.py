"""What the CLI checks before any compute, and how failures outside the harness become one line.

Every check here names the flag, file or key, the value and what is allowed (DEVELOPERS.md: bad input is
refused by name before compute); ``os_error_line`` is the last resort for an OS failure nobody anticipated.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from harness.api.checks import PROTOCOLS_DIR, check_device, protocol_path  # noqa: F401 - shared with the API
from harness.errors import HarnessError


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the message over several lines; the harness prints one ``error:`` line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def positive_int(text: str) -> int:
    """argparse type for counts such as ``--workers``: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; expected an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; expected an integer >= 1")
    return value


def run_dir(text: str) -> Path:
    """argparse type for ``--calibrate``: an existing run directory (it holds ``cells/``)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} does not exist or is not a directory; expected a run directory "
                                         "(the --results of an earlier `harness run`)")
    if not (path / "cells").is_dir():
        raise argparse.ArgumentTypeError(f"{path} is not a run directory (no cells/ in it); expected the --results "
                                         "of an earlier `harness run`")
    return path


def read_json_file(path: Path, what: str, keys: tuple[str, ...] = ()) -> Any:
    """A JSON file the harness wrote; a truncated or foreign one is refused naming the path and the problem."""
    try:
        record = json.loads(path.read_text())
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise HarnessError(f"{path}: {what} is not valid JSON ({e}); the file is damaged (truncated copy or "
                           "an interrupted write)") from None
    except OSError as e:
        raise HarnessError(f"{path}: cannot read {what} ({e.strerror})") from None
    missing = [k for k in keys if not isinstance(record, dict) or k not in record]
    if missing:
        raise HarnessError(f"{path}: {what} lacks key(s) {', '.join(missing)}; not written by this harness")
    return record


def os_error_line(err: OSError, command: str) -> str:
    """``harness CMD: <what failed> <path>: <reason>`` for an OSError that reached the top level."""
    code = errno.errorcode.get(err.errno, "") if err.errno else ""
    paths = " -> ".join(str(p) for p in (err.filename, err.filename2) if p is not None) or "(no path given)"
    reason = err.strerror or str(err) or type(err).__name__
    hint = ""
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "; choose a writable location (--results/--out/--cache) or fix the permissions"
    elif err.errno == errno.ENOSPC:
        hint = "; free some space or choose another location"
    return f"harness {command}: {paths}: {reason}{f' ({code})' if code else ''}{hint}"


def quiet_broken_pipe() -> int:
    """stdout's reader went away (``harness plan X | head -1``): stop quietly, as Unix tools do.

    stdout is pointed at /dev/null so the interpreter's final flush does not raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by the signal
