"""Command-line helpers shared by every entry point (training, evaluation, batch scoring, the web server): value
types, so that a bad value is refused when the flags are parsed, with argparse's usage message, not after an hour of
work; warnings printed as plain lines; and a `kill` handled as Ctrl+C."""
from __future__ import annotations

import argparse
import contextlib
import errno
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn


def plain_warnings() -> None:
    """Print warnings as "warning: ..." lines, without the file, line and source code Python adds: they are meant for
    the person running the command (e.g. too few validation images), not for a developer."""
    warnings.formatwarning = lambda message, *_args, **_kwargs: f"warning: {message}\n"


# A `kill` (SIGTERM) and a closed terminal (SIGHUP; Windows has none), which `interrupt_on_termination` takes as
# Ctrl+C; with Ctrl+C itself, the signals that stop a command.
KILL_SIGNALS = {getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)}
STOP_SIGNALS = {signal.SIGINT, *KILL_SIGNALS}


def interrupt_on_termination() -> None:
    """Make SIGTERM and SIGHUP (a `kill`, systemd, `docker stop`, a closed terminal) stop the program as Ctrl+C
    does, so that it says what was kept and cleans up on the way out; a signal already ignored (`nohup` ignores
    SIGHUP) stays ignored."""
    for number in KILL_SIGNALS:
        if signal.getsignal(number) is signal.SIG_DFL:
            signal.signal(number, signal.default_int_handler)


def ignore_stop_signals() -> None:
    """Ignore Ctrl+C and a `kill` from now until the program ends, once it is stopping: another one had cut its
    clean-up short with a traceback (deleting temporary files, closing a server), and one that came while Python shut
    down killed it (status -2 or -15 instead of the 130 or 0 it was ending with). `kill -9` still stops it."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)


class UsageError(SystemExit):
    """A command line the command refuses, in words (flags that contradict each other, an output folder that holds a
    run, a data folder or model that is not there): exit status 2, as argparse's own refusals, where a plain
    `SystemExit(message)` exits 1, the status of work that failed. The command's entry point prints the message and
    exits 2 (`run_command`, `report_refusal`); one that escapes elsewhere is still printed, with status 1."""


def report_refusal(err: UsageError) -> NoReturn:
    """Print a refused command line's reason and exit with status 2."""
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


def run_command(main: Callable[[], object]) -> NoReturn:
    """Run a command's `main`: warnings as plain lines, a `kill` taken as Ctrl+C, and either one ending it with
    "interrupted" and exit status 130 instead of a traceback; a UsageError printed, with exit status 2; otherwise
    `main`'s return value is the exit status if it is a number, else 0."""
    plain_warnings()
    interrupt_on_termination()
    try:
        status = main()
    except KeyboardInterrupt:
        ignore_stop_signals()
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
    except UsageError as err:
        report_refusal(err)
    sys.exit(status if isinstance(status, int) else 0)


def leave_signals_to_parent() -> None:
    """In a worker process (a pool's initializer): leave Ctrl+C and a `kill` to the parent, which stops its workers.
    A terminal sends Ctrl+C to every process of the command: each worker had printed a KeyboardInterrupt traceback,
    and one that died holding the pool's queue lock hung the parent (2 of 20 Ctrl+Cs while training decoded). And
    `interrupt_on_termination`, inherited, turned the SIGTERM with which the parent stops a worker into the same.
    Then the signals `workers_starting` held back are let through: a Ctrl+C held is dropped, a `kill` stops it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for number in KILL_SIGNALS:
        signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@contextlib.contextmanager
def workers_starting() -> Iterator[None]:
    """Hold Ctrl+C and a `kill` back while worker processes are forked (each with `leave_signals_to_parent` as its
    initializer), and let them through after: a worker starts with its parent's handlers, and one that a Ctrl+C
    reached before its initializer ran had printed a KeyboardInterrupt traceback. The parent still gets every
    Ctrl+C: once the block ends, or sooner through another of its threads."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def write_problem(err: OSError) -> str:
    """Why a file could not be written, in words. Where a file stands on the path of a folder to make, mkdir says
    "File exists" (which reads as if the output were in the way) or "Not a directory", naming a path that may not
    exist: this names the file instead."""
    if err.errno in (errno.EEXIST, errno.ENOTDIR) and err.filename:
        failed = Path(err.filename)
        blocking = next((path for path in (failed, *failed.parents) if path.exists()), None)
        if blocking is not None and not blocking.is_dir():
            return "it is a file, not a folder" if blocking == failed else f"{blocking} is a file, not a folder"
    return err.strerror or str(err)


def named_path(text: str) -> str:
    """A file or folder argument, refused when empty (an unset shell variable: `--out "$DIR"`). An empty path is the
    current folder, into which training had written a run and evaluation its report."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a file or folder")
    return text


def path_argument(text: str) -> Path:
    """`named_path`, as a Path."""
    return Path(named_path(text))


def int_from(low: int, high: int, name: str) -> Callable[[str], int]:
    """The type of an integer flag that must lie from `low` to `high`; `name` is what argparse calls it in "invalid
    NAME value: 'x'"."""
    def number(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, not {value}")
        return value

    number.__name__ = name
    return number


# A random seed: numpy takes 0 to 2**32 - 1. A negative one had failed only after the data was read (and after
# --overwrite had deleted the run it was to replace).
seed = int_from(0, 2**32 - 1, "seed")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number over 0, not {value}")
    return value


def fraction(text: str) -> float:
    """A share or probability: a number from 0 to 1."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {value}")
    return value
