"""Progress of a long command on stderr, so that its stdout stays its result.

    progress = Progress()                                          # stderr
    progress("converting encoder (float16)")                       # a stage: one line, everywhere
    progress.count(120, 2000, "calibration: decoder steps recorded")   # within a stage, on a terminal only
    for study in counted(log, studies, "verifying: studies"):      # the same, over an iterable

Stage lines are printed everywhere: a log file or a CI job shows one line per stage. Counts are one line updated
in place (a carriage return, ~10 redraws a second at most), wiped when complete, and only on a terminal:
nothing elsewhere, so logs hold no carriage-return spam. Library functions take a `log` callable and call
`count(log, ...)` / `counted(log, ...)`: a plain callable (print, list.append, typer.echo) has no counts and
gets only the stage lines.

The lines go to sys.stderr; while runtime.native_logs captures fd 2 (a converter call whose calibration reads
our data), to the real stderr's descriptor instead, not into the capture, so they show as they happen.
Device-safe: standard library only.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO, TypeVar

from edgecap.runtime.native_logs import stderr_fd

T = TypeVar("T")
REDRAW_S = 0.1  # the least time between two redraws of a count


class Progress:
    """Stage lines and terminal-only counts on stderr (or on `stream`, e.g. for a test)."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None):
        self.stream = stream
        self.tty = (stream or sys.stderr).isatty() if tty is None else tty
        self._shown = ""  # the count line on screen, "" when none
        self._drawn = 0.0

    def __call__(self, message: str) -> None:
        """A stage, a warning: one line (after wiping an unfinished count line)."""
        self._wipe()
        self._write(message + "\n")

    def count(self, done: int, total: int, what: str) -> None:
        """`what done/total` as one updating line on a terminal, wiped once done == total (the stage line before
        it says what ran); nothing elsewhere."""
        now = time.monotonic()
        if not self.tty or (0 < done < total and now - self._drawn < REDRAW_S):
            return
        if done >= total:
            self._wipe()
            return
        line = f"{what} {done}/{total}"
        self._write("\r" + line.ljust(len(self._shown)))
        self._shown, self._drawn = line, now

    def close(self) -> None:
        """Wipe an unfinished count line (before the command prints its result)."""
        self._wipe()

    def _wipe(self) -> None:
        if self._shown:
            self._write("\r" + " " * len(self._shown) + "\r")
            self._shown = ""

    def _write(self, text: str) -> None:
        real = stderr_fd()
        if self.stream is None and real != 2:  # fd 2 is being captured (native_logs): straight to the real one
            sys.stderr.flush()  # our lines in the order they were written
            os.write(real, text.encode())
            return
        stream = self.stream or sys.stderr
        stream.write(text)
        stream.flush()


def count(log: Callable[[str], None], done: int, total: int, what: str) -> None:
    """log.count(done, total, what) when `log` is a Progress; nothing for a plain callable."""
    counter = getattr(log, "count", None)
    if counter is not None:
        counter(done, total, what)


def counted(log: Callable[[str], None], items: Iterable[T], what: str, total: int | None = None) -> Iterator[T]:
    """The items of `items`, counting each (count) once it has been handled; total: len(items) by default."""
    n = len(items) if total is None else total  # type: ignore[arg-type]
    count(log, 0, n, what)
    for i, item in enumerate(items, 1):
        yield item
        count(log, i, n, what)
