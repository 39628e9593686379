"""The `edgecap` command line: the Typer `app` (entry point `edgecap.cli:app`) and one module per command.

    caption.py  edgecap caption      reports for images, folders, globs (batch.py: outputs, resume)
    convert.py  edgecap convert      run directory -> verified TFLite bundle
    serve.py    edgecap serve        the runtime as a local HTTP API
    edge_app.py edgecap app          the point-of-care app (Kivy), or a headless screenshot
    bench.py    edgecap bench        latency, memory, size and drift of bundles
    label.py    edgecap label        the rule-based findings labeler
    train.py    edgecap train | evaluate | demo
    data.py     edgecap data stats | fetch
    bundle.py   edgecap bundle compare | keygen | sign | verify
    common.py   exit codes, fail / warn, the table printer, the shared --bundle / --threads / --beam options

Commands import their heavy dependencies (TensorFlow, Kivy, uvicorn, OpenCV) inside the function, so
`edgecap --help` and the device commands start without them. Exit status: 0 success; 1 the command ran but
failed or some inputs failed; 2 bad usage or unreadable input; 3 caption: some input flagged (not a chest
X-ray, or too small to read); 130 interrupted (common.py), from the first instant: while the program loads
(~0.3 s of imports, then Typer building the commands) Ctrl-C ends it at once with 130 (nothing is written
yet), without a traceback; once a command runs, Ctrl-C is a KeyboardInterrupt again, which Typer turns into
130 and commands may handle (caption says where its results are, train keeps its checkpoint).
"""

from __future__ import annotations

import gc
import os
import signal
import sys


def _quit_interrupted(signum: int, frame: object) -> None:
    """SIGINT while edgecap loads: say so and end with 130. Not an exception: a KeyboardInterrupt raised in
    the middle of imports can be swallowed (raised in a weakref callback, Python prints "Exception ignored"
    and goes on) or leave CPython's note that ends the process by SIGINT (see _forget_interrupt). The same as
    common.exit_interrupted, which comes too late here: common imports typer."""
    os.write(2, b"\ninterrupted\n")
    os._exit(130)


def _is_the_program() -> bool:
    """Whether this import starts the `edgecap` program (its entry point, or `python -m edgecap.cli`, while
    argv[0] is still "-m"), not a library user such as a test importing `app`."""
    return sys.argv[:1] == ["-m"] or os.path.basename(sys.argv[0] if sys.argv else "").startswith("edgecap")


if _is_the_program() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _quit_interrupted)  # until main() below: the command starts
if _is_the_program():
    # No cyclic garbage collection while the program loads: imports make ~10^5 long-lived objects (numpy,
    # pydantic, Typer, the command's modules) and each full collection walks them all. main() freezes what
    # loaded (gc.freeze: later collections, and the one at exit, skip it) and turns collection back on.
    # Measured on `edgecap caption`, one image: ~100 ms of a ~500 ms cold start (edgecap bench, cold start).
    gc.disable()

import importlib  # noqa: E402
from typing import Any  # noqa: E402 (after the handler: Ctrl-C during these imports is handled)

import typer  # noqa: E402

from edgecap import __version__  # noqa: E402


class Edgecap(typer.Typer):
    """Typer, with a Ctrl-C that escapes it (it handles those while a command runs) exiting 130 without a
    traceback, and a handled one keeping its exit status (_forget_interrupt)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except KeyboardInterrupt:
            sys.stderr.write("\ninterrupted\n")
            raise SystemExit(130) from None
        finally:
            _forget_interrupt()


def _forget_interrupt() -> None:
    """Let a handled Ctrl-C end the process with the status chosen for it (130). CPython notes a
    KeyboardInterrupt that leaves code run by exec() of a string (dataclasses, namedtuple and typing build
    methods so while modules import, e.g. a command's lazy imports), caught or not, and a program run with
    `python -m` that then ends by SystemExit is killed by SIGINT after finalisation (status -2; measured on
    3.11); the next exec() of a string clears that note."""
    exec("")


app = Edgecap(
    help="edgecap: chest X-ray report generation on edge devices, offline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Each command's module, in the order `edgecap --help` lists them; `name` is the command (or group) on the
# command line, `attr` what the module registers: a Typer group, or a command function with its help override.
COMMANDS: tuple[tuple[str, str, str, str | None], ...] = (
    ("data", "data", "data_app", None),
    ("bundle", "bundle", "bundle_app", None),
    ("caption", "caption", "caption", None),
    ("convert", "convert", "convert", None),
    ("serve", "serve", "serve", None),
    ("app", "edge_app", "app_command", "The point-of-care app (Kivy), or a headless screenshot of a report."),
    ("bench", "bench", "bench", None),
    ("device-check", "device_check", "device_check", None),
    ("label", "label", "label", "Label reports for 14 CheXpert-style observations (rule-based proxy)."),
    ("train", "train", "train", None),
    ("evaluate", "train", "evaluate", None),
    ("demo", "train", "demo", None),
)


def _register(names: set[str] | None) -> None:
    """Register the commands `names` (None: all), importing only their modules."""
    for name, module, attr, help_text in COMMANDS:
        if names is not None and name not in names:
            continue
        target = getattr(importlib.import_module(f"edgecap.cli.{module}"), attr)
        if isinstance(target, typer.Typer):
            app.add_typer(target, name=name)
        else:
            app.command(name, help=help_text)(target)


def _wanted(argv: list[str]) -> set[str] | None:
    """The commands the program started as `edgecap ARGV` needs: its own command only when ARGV starts with one
    (a one-image `edgecap caption` then imports neither the conversion, bench, server nor training code), else
    all of them (`--help`, `--version`, a mistyped command: Click lists or suggests every command). A library
    import (tests, `from edgecap.cli import app`) registers all."""
    if not _is_the_program() or len(argv) < 2:
        return None
    known = {name for name, *_ in COMMANDS}
    return {argv[1]} if argv[1] in known else None


_register(_wanted(sys.argv))


@app.callback(invoke_without_command=True)
def main(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if signal.getsignal(signal.SIGINT) is _quit_interrupted:  # a command starts: Ctrl-C raises KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if _is_the_program() and not gc.isenabled():  # the program has loaded: collect again, skipping what loaded
        gc.freeze()
        gc.enable()
    if version:
        typer.echo(__version__)
        raise typer.Exit()
