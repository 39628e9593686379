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

from typing import Any  # noqa: E402 (after the handler: Ctrl-C during these imports is handled)

import typer  # noqa: E402

from edgecap import __version__  # noqa: E402
from edgecap.cli import bench, bundle, caption, convert, data, device_check, edge_app, label, serve, train  # noqa: E402


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
app.add_typer(data.data_app, name="data")
app.add_typer(bundle.bundle_app, name="bundle")
app.command("caption")(caption.caption)
app.command("convert")(convert.convert)
app.command("serve")(serve.serve)
app.command("app", help="The point-of-care app (Kivy), or a headless screenshot of a report.")(edge_app.app_command)
app.command("bench")(bench.bench)
app.command("device-check")(device_check.device_check)
app.command("label", help="Label reports for 14 CheXpert-style observations (rule-based proxy).")(label.label)
app.command("train")(train.train)
app.command("evaluate")(train.evaluate)
app.command("demo")(train.demo)


@app.callback(invoke_without_command=True)
def main(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if signal.getsignal(signal.SIGINT) is _quit_interrupted:  # a command starts: Ctrl-C raises KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if version:
        typer.echo(__version__)
        raise typer.Exit()
