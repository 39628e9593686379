"""What every `edgecap` command shares: exit codes, error and warning lines, the table printer, shared options.

Exit status, the same meaning in every command:

    0    EXIT_OK           done
    1    EXIT_FAILED       the command ran but failed, or some inputs failed (the others are done)
    2    EXIT_USAGE        bad usage or unusable input: nothing was done
    3    EXIT_FLAGGED      caption: every input captioned, but some were flagged (not a chest X-ray, too small)
    130  EXIT_INTERRUPTED  Ctrl-C; what was written is kept and the same command resumes

`interrupt_exits_at_once` makes Ctrl-C end a command at once with 130 while it has nothing to save (loading).
`fail` prints one red "error: ..." line on stderr and exits: bad input never gives a traceback. The option
factories declare `--bundle`, `--threads` and `--beam` once (flag, range, default), each command keeping its
own help text; a value out of range is a usage error (exit 2) before the command runs: --beam 1..MAX_BEAM
(runtime.decoding), --threads 1..MAX_THREADS; --bundle naming a training run directory is a usage error
that says how to make a bundle of it. Importing this module makes every command's --help show click-style
value names (PATH, N, TEXT...; nothing after a flag) instead of Typer's type labels (<path>, <bool>,
<list[str]>): readable_type. Only typer and the runtime's decode constants are imported here: no TensorFlow.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, NoReturn, Optional, Sequence, Union

import typer

from edgecap.runtime.decoding import DEFAULT_BEAM, MAX_BEAM

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_FLAGGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

BUNDLE_HELP = "Bundle folder (default: the bundle shipped with edgecap)."
BEAM_HELP = "Beam size (1 = greedy)."
# The most interpreter threads a command accepts: this machine's logical CPUs. The interpreter starts one
# worker thread per --threads; past the cores they only take turns on them (no report gets faster), and a
# value like 10,000 is a typo that would start 10,000 threads (memory, the process limit), not a setting.
MAX_THREADS = os.cpu_count() or 1


def error(message: str) -> None:
    """One red "error: ..." line on stderr (the command goes on: one input of many failed)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print "error: message" on stderr and end the command with exit status `code`."""
    error(message)
    raise typer.Exit(code)


def warn(message: str) -> None:
    """One yellow "warning: ..." line on stderr."""
    typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)


def exit_interrupted(signum: int = signal.SIGINT, frame: object = None) -> NoReturn:
    """A SIGINT handler for a phase with nothing to save: "interrupted" on stderr, exit EXIT_INTERRUPTED at once.
    Not a KeyboardInterrupt: raised inside imports or native code, one can be swallowed (a weakref callback
    prints "Exception ignored" and goes on; a native module's init turns it into an ImportError)."""
    os.write(2, b"\ninterrupted\n")
    os._exit(EXIT_INTERRUPTED)


@contextmanager
def interrupt_exits_at_once() -> Iterator[None]:
    """Within: Ctrl-C ends the process at once with EXIT_INTERRUPTED (exit_interrupted), e.g. while a command
    imports its dependencies and loads a bundle, before it has written anything. Main thread only (elsewhere
    signals cannot be handled and nothing changes); the previous handler comes back on leaving."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, exit_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ info and warning logs; call it before TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def quiet_opencv() -> None:
    """OpenCV's own lines below errors off (libpng's "readHeader" warnings for a corrupt PNG: the command's error
    line says it). OpenCV's API for it moved: recent wheels have only cv2.utils.logging, older ones (4.8-4.11,
    what a Pi with numpy 1 installs) only cv2.setLogLevel; both levels are 2 for "errors and worse"."""
    import cv2

    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None:
        logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    elif hasattr(cv2, "setLogLevel"):
        cv2.setLogLevel(2)


def require_module(name: str, message: str) -> None:
    """Fail with a usage error (`message`, which says how to install it) when module `name` is not installed."""
    if importlib.util.find_spec(name) is None:
        fail(message)


def print_table(rows: Sequence[Sequence[str]], align: str = "lr") -> None:
    """Rows of strings (the header first) as columns two spaces apart, a rule of dashes under the header.

    `align` holds one letter per column, 'l' (left) or 'r' (right), its last letter standing for every further
    column: "lr" a name then figures, "l" all left. Trailing spaces are cut.
    """
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    sides = [align[min(i, len(align) - 1)] for i in range(len(widths))]
    for j, r in enumerate(rows):
        typer.echo("  ".join(c.rjust(w) if s == "r" else c.ljust(w) for c, w, s in zip(r, widths, sides)).rstrip())
        if j == 0:
            typer.echo("  ".join("-" * w for w in widths))


def bundle_option(help: str = BUNDLE_HELP) -> Any:
    """`--bundle PATH` (annotate Optional[Path]; Optional[List[str]] makes it repeatable), default None. A
    training run directory given as a bundle ends the command with a usage error (not_a_run_dir)."""
    return typer.Option(None, "--bundle", metavar="PATH", help=help, callback=not_a_run_dir)


def run_dir_hint(path: Path) -> Optional[str]:
    """Why `path` is not a bundle when it is a training run directory (config.json and vocab.json, no
    manifest.json: training.run_dir.RunDir), and the command that makes a bundle of it; None otherwise."""
    if (path / "manifest.json").exists() or not ((path / "config.json").is_file() and (path / "vocab.json").is_file()):
        return None
    return (
        f"{path} is a training run directory, not a bundle (config.json and vocab.json, no manifest.json): "
        f"make a bundle of it with `edgecap convert --run {path} --out BUNDLE`, then pass --bundle BUNDLE"
    )


def not_a_run_dir(value: Union[None, Path, str, List[str]]) -> Any:
    """--bundle's callback: exit 2 with run_dir_hint's line when a value is a run directory; else the value."""
    for v in value if isinstance(value, list) else [] if value is None else [value]:
        hint = run_dir_hint(Path(v))
        if hint:
            fail(hint)
    return value


def threads_option(help: str) -> Any:
    """`--threads N` (annotate Optional[int]): interpreter threads, 1..MAX_THREADS (Typer shows the range, the
    help says why); None leaves the default."""
    return typer.Option(None, "--threads", min=1, max=MAX_THREADS, help=f"{help} At most the CPU count.")


def beam_option(help: str = BEAM_HELP) -> Any:
    """`--beam N` (annotate int), default runtime.decoding.DEFAULT_BEAM, 1..MAX_BEAM (the widest beam the HTTP
    API accepts too; Typer shows the range)."""
    return typer.Option(DEFAULT_BEAM, "--beam", min=1, max=MAX_BEAM, help=help)


# Typer's type labels ("<path>", "<int range>", "<list[str]>") -> what --help shows instead: click's style
_KINDS = {"bool": "", "int": "N", "int range": "N", "float": "NUMBER", "float range": "NUMBER", "str": "TEXT",
          "path": "PATH", "file": "FILE", "directory": "DIR", "dir": "DIR"}


def readable_type(label: str) -> str:
    """A Typer type label -> a value name: "<path>" -> "PATH", "<int range>" -> "N", "<list[str]>" -> "TEXT...",
    "<bool>" -> "" (a flag takes no value); choices ("<a|b>") keep their words, a given metavar stays."""
    dots = "..." if label.endswith("...") else ""
    inner = label[: len(label) - len(dots)]
    if inner.startswith("<") and inner.endswith(">"):
        inner = inner[1:-1]
    if inner.startswith("list[") and inner.endswith("]"):
        inner, dots = inner[5:-1], "..."
    kind = _KINDS.get(inner, inner)
    return kind + dots if kind else ""


def _show_readable_types() -> None:
    """Make Typer's help (rich or plain) show readable_type's names: nothing after a flag, and nothing in the
    type column of an argument whose metavar already names it (`IMAGE|DIR|GLOB...`). Typer >= 0.2x prints its
    labels through display_type_rich; older ones print click's metavars, already readable, and are left as
    they are."""
    from typer import core

    for cls in (core.TyperArgument, core.TyperOption):
        original = getattr(cls, "display_type_rich", None)
        if original is None or getattr(original, "_edgecap", False):
            continue

        def display_type_rich(self: Any, ctx: Any, _original: Any = original) -> Optional[str]:
            if getattr(self, "is_flag", False) or (self.param_type_name == "argument" and self.metavar is not None):
                return ""
            shown = _original(self, ctx)
            return None if shown is None else readable_type(shown)

        display_type_rich._edgecap = True  # type: ignore[attr-defined]
        cls.display_type_rich = display_type_rich  # type: ignore[method-assign]


_show_readable_types()
