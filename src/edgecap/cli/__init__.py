"""The `edgecap` command line: the Typer `app` (entry point `edgecap.cli:app`) and one module per command.

    caption.py  edgecap caption      reports for images, folders, globs (batch.py: outputs, resume)
    convert.py  edgecap convert      run directory -> verified TFLite bundle
    serve.py    edgecap serve        the runtime as a local HTTP API
    edge_app.py edgecap app          the point-of-care app (Kivy), or a headless screenshot
    bench.py    edgecap bench        latency, memory, size and drift of bundles
    label.py    edgecap label        the rule-based findings labeler
    train.py    edgecap train | evaluate | demo
    data.py     edgecap data stats | fetch
    bundle.py   edgecap bundle compare
    common.py   exit codes, fail / warn, the table printer, the shared --bundle / --threads / --beam options

Commands import their heavy dependencies (TensorFlow, Kivy, uvicorn, OpenCV) inside the function, so
`edgecap --help` and the device commands start without them. Exit status: 0 success; 1 the command ran but
failed or some inputs failed; 2 bad usage or unreadable input; 3 caption: some input flagged as not a chest
X-ray; 130 interrupted (common.py).
"""

from __future__ import annotations

import typer

from edgecap import __version__
from edgecap.cli import bench, bundle, caption, convert, data, edge_app, label, serve, train

app = typer.Typer(
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
app.command("label", help="Label reports for 14 CheXpert-style observations (rule-based proxy).")(label.label)
app.command("train")(train.train)
app.command("evaluate")(train.evaluate)
app.command("demo")(train.demo)


@app.callback(invoke_without_command=True)
def main(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()
